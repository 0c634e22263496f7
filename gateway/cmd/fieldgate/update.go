package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"fieldgate/gateway/config"
	"fieldgate/gateway/supervisor"
	"fieldgate/gateway/update"
	fgruntime "fieldgate/runtime"
)

// killAfterEnv names an install step (staged, switched) after which
// `fieldgate update` SIGKILLs itself: fault injection for the power-cut
// tests, which must stop the update at a known point.
const killAfterEnv = "FIELDGATE_UPDATE_KILL_AFTER"

// cmdUpdate is `fieldgate update BUNDLE`, `--status` and `--boot`.
func cmdUpdate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("update", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", defaultConfigPath, "gateway config `FILE` (gateway.data_dir and update:)")
	status := fs.Bool("status", false, "show the installed versions, the trial and the last result")
	asJSON := fs.Bool("json", false, "with --status: print JSON")
	boot := fs.Bool("boot", false, "select the slot to start and count the start of a version on trial (the systemd unit's ExecStartPre)")
	allowDowngrade := fs.Bool("allow-downgrade", false, "install a bundle whose version is not newer than the running one")
	wait := fs.Bool("wait", false, "wait until the new version commits itself or is rolled back (exit 1 if rolled back)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	settings, err := loadUpdateSettings(*path, stderr)
	if err != nil {
		if *boot {
			// Never keep the service from starting: the supervisor reports
			// the config's problems itself.
			fmt.Fprintf(stdout, "fieldgate boot: %v; starting the current slot as it is\n", err)
			return nil
		}
		return err
	}
	store := update.NewStore(settings.DataDir)
	switch {
	case *status:
		if len(pos) > 0 {
			return usageError("update --status: unexpected argument %q", pos[0])
		}
		return updateStatus(ctx, store, *path, *asJSON, stdout)
	case *boot:
		if len(pos) > 0 {
			return usageError("update --boot: unexpected argument %q", pos[0])
		}
		return bootSelect(store, stdout)
	case len(pos) != 1:
		return usageError("update: want one BUNDLE (a .tar.gz from make firmware or its unpacked directory), --status or --boot")
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts := []update.InstallOption{
		update.WithAllowDowngrade(*allowDowngrade),
		update.WithBootAttempts(settings.Update.BootAttempts),
		update.WithInstallLogger(log),
	}
	if step := os.Getenv(killAfterEnv); step != "" {
		opts = append(opts, update.WithStepHook(func(s string) {
			if s == step {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {} // the signal is on its way
			}
		}))
	}
	inst, err := update.NewInstaller(store, settings.Update.KeysDir, opts...)
	if err != nil {
		return err
	}
	res, err := inst.Install(pos[0])
	if err != nil {
		return fmt.Errorf("update refused, nothing changed: %w", err)
	}
	fmt.Fprintf(stdout, "verified fieldgate %s (signed with %s), installed in slot %s\n", res.Version, res.KeyFile, res.Slot)
	if !res.Trial {
		fmt.Fprintf(stdout, "first installation: version %s is committed; start it with: systemctl enable --now fieldgate\n", res.Version)
		return nil
	}
	fmt.Fprintf(stdout, "version %s is on trial: a running supervisor restarts on it within seconds; it commits itself once every collector has run and published for %s (within %s of a start), else it rolls back to %s\n",
		res.Version, settings.Update.HealthyFor, settings.Update.ConfirmWithin, res.From)
	if !*wait {
		fmt.Fprintln(stdout, "follow it with: fieldgate update --status")
		return nil
	}
	return waitTrial(ctx, store, settings, stdout)
}

// rollBackRejectedConfig handles a config the supervisor cannot run with.
// Normally that is exit status 2, which the systemd unit does not restart;
// but a version on trial that rejects the config the previous version ran
// with must not stay stuck: it rolls itself back and exits 1, so the next
// start runs the committed version.
func rollBackRejectedConfig(path string, cfgErr error, log *slog.Logger) error {
	s, err := config.LoadUpdateSettings(path)
	if err != nil {
		return cfgErr
	}
	store := update.NewStore(s.DataDir)
	st, err := store.State()
	if err != nil || st == nil || st.Trial == nil {
		return cfgErr
	}
	reason := fmt.Sprintf("version %s rejects %s: %v", st.Trial.Version, path, cfgErr)
	ok, err := store.RollBack(st.Current, reason, time.Now())
	if err != nil || !ok {
		return cfgErr
	}
	log.Error("update rolled back: the new version rejects the config", "version", st.Trial.Version, "err", cfgErr)
	return &exitError{code: 1, err: errors.New("rolled back to the committed version; restart to run it")}
}

// loadUpdateSettings reads the update settings, printing each problem.
func loadUpdateSettings(path string, w io.Writer) (*config.UpdateSettings, error) {
	s, err := config.LoadUpdateSettings(path)
	if err == nil {
		return s, nil
	}
	var ce interface{ Lines() []string }
	if errors.As(err, &ce) {
		for _, line := range ce.Lines() {
			fmt.Fprintln(w, line)
		}
	}
	return nil, &exitError{code: 2, err: err}
}

// waitTrial polls the state until the trial ends: nil when committed.
func waitTrial(ctx context.Context, store *update.Store, s *config.UpdateSettings, stdout io.Writer) error {
	// Every start gets confirm_within; a version gets boot_attempts starts.
	deadline := time.Now().Add(time.Duration(s.Update.BootAttempts+1)*s.Update.ConfirmWithin.D() + time.Minute)
	for time.Now().Before(deadline) {
		st, err := store.Status()
		if err != nil {
			return err
		}
		if st != nil && st.State != supervisor.UpdateTrial && st.Last != nil {
			printUpdateStatus(stdout, st, time.Now())
			if st.State == supervisor.UpdateRolledBack {
				return &exitError{code: 1, err: fmt.Errorf("version %s was rolled back: %s", st.Last.Version, st.Last.Reason)}
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return fmt.Errorf("the trial did not end by %s; see fieldgate update --status", deadline.Format(time.RFC3339))
}

// bootSelect is the systemd unit's ExecStartPre. It never blocks the start
// of the committed version: a state it cannot read is reported and the
// links are left as they are.
func bootSelect(store *update.Store, stdout io.Writer) error {
	d, err := store.Boot(time.Now())
	switch {
	case err != nil:
		fmt.Fprintf(stdout, "fieldgate boot: update state unusable, starting what %s points at: %v\n", store.CurrentBinary(), err)
		return nil
	case !d.Installed:
		fmt.Fprintln(stdout, "fieldgate boot: no firmware slot installed")
	case d.RolledBack:
		fmt.Fprintf(stdout, "fieldgate boot: rolled back to version %s (slot %s): %s\n", d.Version, d.Slot, d.Reason)
	case d.Trial:
		fmt.Fprintf(stdout, "fieldgate boot: starting version %s (slot %s) on trial, start %d of %d\n", d.Version, d.Slot, d.Boots, d.MaxBoots)
	default:
		fmt.Fprintf(stdout, "fieldgate boot: starting version %s (slot %s)\n", d.Version, d.Slot)
	}
	return nil
}

// updateStatus prints the update state from the slots, with the trial's
// live progress from a running supervisor when one answers.
func updateStatus(ctx context.Context, store *update.Store, path string, asJSON bool, stdout io.Writer) error {
	st, err := store.Status()
	if err != nil {
		return err
	}
	if st == nil {
		if asJSON {
			fmt.Fprintln(stdout, "null")
			return nil
		}
		fmt.Fprintf(stdout, "no firmware installed in %s (install a bundle with: fieldgate update BUNDLE)\n", store.Dir())
		return nil
	}
	if st.Trial != nil {
		if cfg, err := config.Load(path); err == nil {
			if live, _, err := fetchStatus(ctx, cfg.Gateway.Listen); err == nil && live.Update != nil && live.Update.Trial != nil {
				st.Trial.Waiting, st.Trial.Deadline = live.Update.Trial.Waiting, live.Update.Trial.Deadline
			}
		}
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printUpdateStatus(stdout, st, time.Now())
	return nil
}

// printUpdateStatus writes the update state for people.
func printUpdateStatus(w io.Writer, st *supervisor.UpdateStatus, now time.Time) {
	version := func(v *supervisor.SlotVersion) string {
		if v == nil {
			return "-"
		}
		return fmt.Sprintf("%s (slot %s)", v.Version, v.Slot)
	}
	fmt.Fprintf(w, "state:     %s\n", st.State)
	fmt.Fprintf(w, "current:   %s\n", version(st.Current))
	fmt.Fprintf(w, "previous:  %s\n", version(st.Previous))
	if t := st.Trial; t != nil {
		fmt.Fprintf(w, "trial:     version %s replacing %s, since %s, start %d of %d\n",
			t.Version, t.From, t.Since.Local().Format(time.DateTime), t.Boots, t.MaxBoots)
		if t.Deadline != nil {
			fmt.Fprintf(w, "           rolls back in %s unless healthy\n", t.Deadline.Sub(now).Round(time.Second))
		}
		if t.Waiting != "" {
			fmt.Fprintf(w, "           waiting for: %s\n", t.Waiting)
		}
	}
	if l := st.Last; l != nil {
		what := l.Result + " " + l.Version
		if l.From != "" {
			what += " (from " + l.From + ")"
		}
		fmt.Fprintf(w, "last:      %s at %s", what, l.At.Local().Format(time.DateTime))
		if l.Reason != "" {
			fmt.Fprintf(w, ": %s", l.Reason)
		}
		fmt.Fprintln(w)
	}
}

// slotImages is the runtime as the update package needs it: pinned
// import, and pruning after a commit.
type slotImages struct{ rt *fgruntime.Runtime }

func (s slotImages) ImportArchive(ctx context.Context, file string) ([]update.ImageRef, error) {
	res, err := s.rt.ImportArchive(ctx, file)
	if err != nil {
		return nil, err
	}
	out := make([]update.ImageRef, 0, len(res.Images))
	for _, im := range res.Images {
		out = append(out, update.ImageRef{Name: im.Name, Digest: im.Digest})
	}
	return out, nil
}

func (s slotImages) PruneImages(ctx context.Context, keep []string) ([]string, error) {
	removed, err := s.rt.PruneImages(ctx, keep)
	names := make([]string, 0, len(removed))
	for _, im := range removed {
		names = append(names, im.Name)
	}
	return names, err
}

// importPinned imports the images the active slot's manifest pins, and
// only those (runtime.images_dir is not read while a slot is installed).
func importPinned(ctx context.Context, images slotImages, cfg *config.Config, store *update.Store, slot string, log *slog.Logger) {
	if err := store.ImportPinned(ctx, images, slot, log); err != nil {
		log.Error("pinned image import incomplete", "slot", slot, "err", err)
	}
	if archives, _ := imageArchives(cfg.Runtime.ImagesDir); len(archives) > 0 {
		log.Warn("runtime.images_dir ignored: a firmware slot is installed and only the images its manifest pins are imported",
			"images_dir", cfg.Runtime.ImagesDir, "archives", strings.Join(archives, " "))
	}
}

// imageArchives lists the *.tar files of dir.
func imageArchives(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".tar") {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// activeSlot is the slot this supervisor runs from ("" when no firmware is
// installed): the state's current slot. A binary started from elsewhere is
// warned about but serves the active slot's images.
func activeSlot(store *update.Store, log *slog.Logger) string {
	st, err := store.State()
	if err != nil {
		log.Error("update state unreadable: running without a firmware slot", "err", err)
		return ""
	}
	if st == nil {
		return ""
	}
	if exe, err := os.Executable(); err == nil {
		want := filepath.Join(store.SlotDir(st.Current), update.BinaryFile)
		if real, err := filepath.EvalSymlinks(want); err == nil {
			want = real // /proc/self/exe is resolved too
		}
		if exe != want {
			log.Warn("this binary is not the active firmware slot's", "executable", exe, "slot_binary", want)
		}
	}
	return st.Current
}
