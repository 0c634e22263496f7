package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/sync/errgroup"

	"fieldgate/collectors/configfile"
	"fieldgate/gateway/config"
	"fieldgate/gateway/containers"
	"fieldgate/gateway/httpapi"
	"fieldgate/gateway/statuspub"
	"fieldgate/gateway/supervisor"
	"fieldgate/gateway/update"
	fgruntime "fieldgate/runtime"
)

// defaultConfigPath is where the firmware installs gateway.yaml.
const defaultConfigPath = "/etc/fieldgate/gateway.yaml"

// parseFlags parses args with fs, allowing flags after positional arguments
// (`fieldgate logs NAME -n 50`), and returns the positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, &exitError{code: 0, err: errSilent}
			}
			return nil, &exitError{code: 2, err: errSilent}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// loadConfig loads gateway.yaml; an invalid file is printed problem by
// problem to w and returned as an exit status of code.
func loadConfig(path string, w io.Writer, code int, opts ...config.Option) (*config.Config, error) {
	cfg, err := config.Load(path, opts...)
	if err == nil {
		return cfg, nil
	}
	var ce *configfile.Errors
	if !errors.As(err, &ce) {
		return nil, &exitError{code: code, err: err}
	}
	for _, line := range ce.Lines() {
		fmt.Fprintln(w, line)
	}
	return nil, &exitError{code: code, err: fmt.Errorf("%s: %d problem(s)", path, len(ce.List))}
}

func cmdValidate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", defaultConfigPath, "gateway config `FILE`")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError("validate: unexpected argument %q", pos[0])
	}
	cfg, err := loadConfig(*path, stdout, 1)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok (gateway %q, %d collectors)\n", *path, cfg.Gateway.ID, len(cfg.Collectors))
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, usageError("invalid --log-level %q (valid: debug, info, warn, error)", s)
	}
	return l, nil
}

func cmdRun(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", defaultConfigPath, "gateway config `FILE`")
	stopCollectors := fs.Bool("stop-collectors", false, "stop and remove the collector containers when fieldgate stops (default: leave them running)")
	levelName := fs.String("log-level", "info", "log level: debug, info, warn, error")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError("run: unexpected argument %q", pos[0])
	}
	level, err := parseLevel(*levelName)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	// A config with long protocol sections is parsed into trees and
	// re-encoded (tens of MB for 5,000 OPC UA nodes): collecting more
	// often meanwhile keeps the start-up peak down (106 → 87 MiB there).
	gc := debug.SetGCPercent(20)
	cfg, err := loadConfig(*path, stderr, 2)
	debug.SetGCPercent(gc)
	if err != nil {
		return rollBackRejectedConfig(*path, err, log)
	}
	log.Info("fieldgate starting", "version", version, "config", *path, "gateway", cfg.Gateway.ID, "collectors", len(cfg.Collectors))

	// The firmware slot (if one is installed) decides which images are
	// imported, and the committed version's binary is the collectors' log
	// driver.
	store := update.NewStore(cfg.Gateway.DataDir)
	slot := activeSlot(store, log)
	var copts []containers.Option
	if slot != "" {
		copts = append(copts, containers.WithImagesDir(""),
			containers.WithRuntimeOptions(fgruntime.WithLogDriver(store.CommittedBinary())))
	}
	rt, err := containers.Open(ctx, cfg, log, copts...)
	if err != nil {
		return err
	}
	defer rt.Close()
	images := slotImages{rt.Runtime()}
	if slot != "" {
		importPinned(ctx, images, cfg, store, slot, log)
	}
	// Parsing a large config (the node trees of every protocol section) and
	// importing the images leave tens of MB of garbage: give it back to the
	// system now rather than at the scavenger's pace, so the supervisor's
	// RSS is its working set from the start.
	debug.FreeOSMemory()
	var mon *update.Monitor // set before anything asks for the status
	supOpts := []supervisor.Option{
		supervisor.WithLogger(log),
		supervisor.WithStopCollectors(*stopCollectors),
		supervisor.WithVersion(version),
		supervisor.WithUpdateStatus(func() *supervisor.UpdateStatus { return mon.Status() }),
	}
	if slot == "" {
		// Without a firmware slot old images go once the collectors run
		// their new digests; with one, only after an update's commit (the
		// update monitor prunes then, keeping both slots' images).
		supOpts = append(supOpts, supervisor.WithPrune(rt.Prune))
	}
	sup, err := supervisor.New(cfg, rt, supOpts...)
	if err != nil {
		return err
	}
	token, err := httpapi.NewToken(filepath.Join(cfg.Gateway.DataDir, supervisor.StateDirName))
	if err != nil {
		return err
	}
	api, err := httpapi.New(cfg.Gateway.Listen, sup, log, token)
	if err != nil {
		return err
	}
	if err := api.Listen(); err != nil {
		return err
	}
	pub, err := statuspub.New(statuspub.Config{
		Broker:       cfg.MQTT.Broker,
		Username:     cfg.MQTT.Username,
		PasswordFile: cfg.MQTT.PasswordFile,
		CAFile:       cfg.MQTT.TLS.CAFile,
		CertFile:     cfg.MQTT.TLS.CertFile,
		KeyFile:      cfg.MQTT.TLS.KeyFile,
		TopicPrefix:  cfg.MQTT.TopicPrefix,
		GatewayID:    cfg.Gateway.ID,
		Version:      version,
	}, sup, log)
	if err != nil {
		return err
	}
	mon, err = update.NewMonitor(store, slot, cfg.Update.ConfirmWithin.D(), cfg.Update.HealthyFor.D(), sup, pub,
		update.WithImagePruner(images),
		update.WithReady(sup.Ready()),
		update.WithMonitorLogger(log),
		update.WithOnChange(sup.NotifyChanged))
	if err != nil {
		return err
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return sup.Run(gctx) })
	g.Go(func() error { return api.Run(gctx) })
	g.Go(func() error { return pub.Run(gctx) })
	g.Go(func() error { return mon.Run(gctx) })
	g.Go(func() error {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-hup:
				log.Info("SIGHUP: reloading config")
				sup.Reload()
			}
		}
	})
	g.Go(func() error {
		select {
		case <-gctx.Done():
		case <-sup.Ready():
			if err := sdNotify("READY=1\nSTATUS=supervising collectors"); err != nil {
				log.Warn("systemd notify failed", "err", err)
			}
			log.Info("fieldgate ready", "http", api.Addr())
		}
		return nil
	})
	<-gctx.Done()
	_ = sdNotify("STOPPING=1")
	log.Info("fieldgate stopping", "stop_collectors", *stopCollectors)
	err = g.Wait()
	if errors.Is(err, update.ErrSlotChanged) {
		// The collectors run on; the service manager starts the active
		// slot's binary, which adopts them.
		log.Info("fieldgate stopped to restart on the active firmware slot", "why", err)
		return nil
	}
	log.Info("fieldgate stopped")
	return err
}

// sdNotify sends state to systemd's notification socket ($NOTIFY_SOCKET), if
// any: the Type=notify protocol is one datagram, so no library is needed.
func sdNotify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	if addr[0] == '@' {
		addr = "\x00" + addr[1:] // abstract socket
	}
	conn, err := net.Dial("unixgram", addr)
	if err != nil {
		return fmt.Errorf("notify %q: %w", os.Getenv("NOTIFY_SOCKET"), err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("notify %q: %w", os.Getenv("NOTIFY_SOCKET"), err)
	}
	return nil
}

func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "", "supervisor HTTP address HOST:PORT (default: gateway.listen of --config or "+defaultConfigPath+", else "+config.DefaultGateway.Listen+")")
	path := fs.String("config", "", "gateway config `FILE` to take gateway.listen from")
	asJSON := fs.Bool("json", false, "print the raw /status JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError("status: unexpected argument %q", pos[0])
	}
	target, err := listenAddr(*addr, *path, stderr)
	if err != nil {
		return err
	}
	st, raw, err := fetchStatus(ctx, target)
	if err != nil {
		return err
	}
	if *asJSON {
		_, err := stdout.Write(raw)
		return err
	}
	printStatus(stdout, st, time.Now())
	return nil
}

func fetchStatus(ctx context.Context, addr string) (supervisor.Status, []byte, error) {
	st, raw, err := httpapi.FetchStatus(ctx, addr)
	if errors.Is(err, httpapi.ErrNoSupervisor) {
		return st, raw, fmt.Errorf("is fieldgate running? %w", err)
	}
	return st, raw, err
}

// printStatus writes the status as a table.
func printStatus(w io.Writer, st supervisor.Status, now time.Time) {
	fmt.Fprintf(w, "gateway %s (fieldgate %s)\n", st.GatewayID, st.Version)
	if st.LastReloadError != "" {
		fmt.Fprintf(w, "last reload rejected:\n  %s\n", strings.ReplaceAll(st.LastReloadError, "\n", "\n  "))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tPID\tRESTARTS\tUP\tLAST EXIT\tMQTT\tQUEUED\tIMAGE\tDIGEST\tERROR")
	for _, c := range st.Collectors {
		up, exit, pid, digest := "-", "-", "-", "-"
		if c.StartedAt != nil && c.State == supervisor.StateRunning {
			up = now.Sub(*c.StartedAt).Round(time.Second).String()
		}
		if c.LastExit != nil {
			exit = fmt.Sprintf("%d (%s ago)", c.LastExit.Code, now.Sub(c.LastExit.At).Round(time.Second))
		}
		if c.Pid != 0 {
			pid = fmt.Sprint(c.Pid)
		}
		if d, ok := strings.CutPrefix(c.ImageDigest, "sha256:"); ok && len(d) >= 12 {
			digest = d[:12]
			// The tag points elsewhere: an upgrade not yet applied (or failing).
			if t, ok := strings.CutPrefix(c.ConfiguredDigest, "sha256:"); ok && len(t) >= 12 && !c.DigestMatches {
				digest += " (tag: " + t[:12] + ")"
			}
		}
		errMsg := c.LastError
		if errMsg == "" {
			errMsg = "-"
		}
		mqtt, queued := reportColumns(c.Report)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.Name, c.State, pid, c.Restarts, up, exit, mqtt, queued, c.Image, digest, errMsg)
	}
	tw.Flush()
}

// reportColumns summarises a collector's own status report: its MQTT
// connection ("ok" or the broker's reason) and the batches it has queued
// (with drops, if any).
func reportColumns(raw json.RawMessage) (mqtt, queued string) {
	var r struct {
		MQTT struct {
			Connected bool   `json:"connected"`
			LastError string `json:"last_error"`
		} `json:"mqtt"`
		Queue *struct {
			Pending  int    `json:"pending"`
			Dropped  uint64 `json:"dropped"`
			Rejected uint64 `json:"rejected"`
			Corrupt  uint64 `json:"corrupt"`
		} `json:"queue"`
	}
	if len(raw) == 0 || json.Unmarshal(raw, &r) != nil {
		return "-", "-"
	}
	switch {
	case r.MQTT.Connected:
		mqtt = "ok"
	case r.MQTT.LastError != "":
		mqtt = "error: " + r.MQTT.LastError
	default:
		mqtt = "connecting"
	}
	queued = "-"
	if r.Queue != nil {
		queued = fmt.Sprint(r.Queue.Pending)
		if lost := r.Queue.Dropped + r.Queue.Rejected + r.Queue.Corrupt; lost > 0 {
			queued += fmt.Sprintf(" (%d lost)", lost)
		}
	}
	return mqtt, queued
}
