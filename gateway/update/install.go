package update

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	fgruntime "fieldgate/runtime"
)

// Install steps, in order, passed to WithStepHook once each is durable.
const (
	// StepStaged: the new version is complete in the other slot; nothing
	// runs it yet.
	StepStaged = "staged"
	// StepSwitched: state.json names the new slot; the next start of the
	// supervisor runs it on trial.
	StepSwitched = "switched"
)

// Installer installs bundles into a Store. Create it with NewInstaller.
type Installer struct {
	store          *Store
	keysDir        string
	bootAttempts   int
	allowDowngrade bool
	arch           string
	log            *slog.Logger
	now            func() time.Time
	stepHook       func(step string)
}

// InstallOption configures an Installer.
type InstallOption func(*Installer)

// WithAllowDowngrade lets a bundle whose version is not newer than the
// running one be installed (it still goes on trial).
func WithAllowDowngrade(allow bool) InstallOption {
	return func(i *Installer) { i.allowDowngrade = allow }
}

// WithBootAttempts sets how many starts the new version gets before the boot
// selector rolls it back (update.boot_attempts; default 3).
func WithBootAttempts(n int) InstallOption { return func(i *Installer) { i.bootAttempts = n } }

// WithInstallLogger sets the logger (default: discard).
func WithInstallLogger(l *slog.Logger) InstallOption { return func(i *Installer) { i.log = l } }

// WithArchitecture overrides the host platform bundles must be built for
// (tests; default HostArchitecture()).
func WithArchitecture(arch string) InstallOption { return func(i *Installer) { i.arch = arch } }

// WithStepHook calls f after each install step (StepStaged, StepSwitched)
// has been made durable: fault injection for power-cut tests.
func WithStepHook(f func(step string)) InstallOption { return func(i *Installer) { i.stepHook = f } }

// NewInstaller returns an installer into store that trusts the keys of
// keysDir (read at each Install, so a revoked key is gone at once).
func NewInstaller(store *Store, keysDir string, opts ...InstallOption) (*Installer, error) {
	if store == nil {
		return nil, errors.New("update: no store")
	}
	if !filepath.IsAbs(keysDir) {
		return nil, fmt.Errorf("update: keys dir %q must be absolute", keysDir)
	}
	i := &Installer{store: store, keysDir: keysDir, bootAttempts: 3, arch: HostArchitecture(),
		log: slog.New(slog.DiscardHandler), now: time.Now, stepHook: func(string) {}}
	for _, o := range opts {
		o(i)
	}
	if i.bootAttempts < 1 {
		return nil, fmt.Errorf("update: boot attempts %d must be at least 1", i.bootAttempts)
	}
	return i, nil
}

// Installed is what Install did.
type Installed struct {
	Version string
	Slot    string
	// From is the version that was running (empty on a first installation).
	From string
	// Trial is true when the version went on trial; a first installation
	// is committed at once (there is nothing to roll back to).
	Trial bool
	// KeyFile is the trusted key that signed the bundle.
	KeyFile string
}

// Verified is a bundle whose signature and files have been checked.
type Verified struct {
	Manifest *Manifest
	KeyFile  string

	manifest, signature []byte // as read, copied into the slot
}

// Verify checks a bundle without installing it: the manifest's signature by
// a trusted key first, then the manifest, then every file against its size
// and sha256. It writes nothing.
func (i *Installer) Verify(bundlePath string) (*Verified, error) {
	b, v, err := i.verifyManifest(bundlePath)
	if err != nil {
		return nil, err
	}
	if err := i.checkFiles(b, v, ""); err != nil {
		return nil, err
	}
	return v, nil
}

// verifyManifest opens the bundle and checks its manifest: signature by a
// trusted key, format, architecture.
func (i *Installer) verifyManifest(bundlePath string) (bundleSource, *Verified, error) {
	b, err := openBundle(bundlePath)
	if err != nil {
		return nil, nil, err
	}
	manifest, err := b.readSmall(ManifestFile, maxManifestBytes)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, nil, fmt.Errorf("%w: bundle %q has no %s", ErrMalformed, b, ManifestFile)
	case err != nil:
		return nil, nil, err
	}
	sig, err := b.readSmall(SignatureFile, maxSignatureBytes)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, nil, fmt.Errorf("%w: no signature: bundle %q has no %s", ErrBadSignature, b, SignatureFile)
	case err != nil:
		return nil, nil, err
	}
	keys, err := LoadKeys(i.keysDir)
	if err != nil {
		return nil, nil, err
	}
	keyFile, err := keys.Verify(manifest, sig)
	if err != nil {
		return nil, nil, err
	}
	m, err := ParseManifest(manifest)
	if err != nil {
		return nil, nil, err
	}
	if m.Architecture != i.arch {
		return nil, nil, fmt.Errorf("%w: the bundle is for %s, this gateway is %s", ErrWrongArchitecture, m.Architecture, i.arch)
	}
	return b, &Verified{Manifest: m, KeyFile: keyFile, manifest: manifest, signature: sig}, nil
}

// checkFiles walks the bundle: every entry must be a regular file the
// manifest lists, with its size and hash; every listed file must be there.
// With stage set, each file is copied there while it is hashed.
func (i *Installer) checkFiles(b bundleSource, v *Verified, stage string) error {
	m := v.Manifest
	want := map[string]File{}
	for _, f := range m.Files {
		want[f.Path] = f
	}
	seen := map[string]bool{}
	err := b.walk(func(e bundleEntry) error {
		if e.path == ManifestFile || e.path == SignatureFile {
			return nil
		}
		f, listed := want[e.path]
		switch {
		case !listed:
			return fmt.Errorf("%w: %q is not listed in the manifest", ErrUnlisted, e.path)
		case !e.regular:
			return fmt.Errorf("%w: %q is %s", ErrUnlisted, e.path, e.kind)
		case e.size != f.Size:
			return fmt.Errorf("%w on %s: %d bytes, the manifest says %d", ErrHashMismatch, e.path, e.size, f.Size)
		}
		seen[e.path] = true
		return copyChecked(e, f, stage)
	})
	if err != nil {
		return err
	}
	var missing []string
	for p := range want {
		if !seen[p] {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("%w: listed in the manifest but missing: %s", ErrUnlisted, strings.Join(missing, ", "))
	}
	if stage == "" {
		return nil
	}
	if err := checkImagePins(stage, m); err != nil {
		return err
	}
	for name, data := range map[string][]byte{ManifestFile: v.manifest, SignatureFile: v.signature} {
		if err := writeNew(filepath.Join(stage, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// copyChecked hashes e's content (copying it to stage/e.path when stage is
// set) and compares it with f.
func copyChecked(e bundleEntry, f File, stage string) error {
	h := sha256.New()
	var w io.Writer = h
	var out *os.File
	if stage != "" {
		dst := filepath.Join(stage, filepath.FromSlash(e.path))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if f.Executable {
			mode = 0o755
		}
		var err error
		out, err = os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|noFollow, mode)
		if err != nil {
			return err
		}
		defer out.Close()
		w = io.MultiWriter(h, out)
	}
	n, err := io.Copy(w, io.LimitReader(e.r, f.Size+1))
	if err != nil {
		return fmt.Errorf("bundle file %q: %w", e.path, err)
	}
	if n != f.Size {
		return fmt.Errorf("%w on %s: %d bytes, the manifest says %d", ErrHashMismatch, e.path, n, f.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != f.SHA256 {
		return fmt.Errorf("%w on %s: sha256 %s, the manifest says %s", ErrHashMismatch, e.path, got, f.SHA256)
	}
	if out != nil {
		if err := out.Sync(); err != nil {
			return err
		}
		return out.Close()
	}
	return nil
}

// checkImagePins compares the names and digests each staged archive's
// index.json carries with the manifest's pins for it: an archive may not
// point any name the manifest does not pin, nor elsewhere.
func checkImagePins(stage string, m *Manifest) error {
	byArchive := map[string]map[string]string{}
	for _, im := range m.Images {
		if byArchive[im.Archive] == nil {
			byArchive[im.Archive] = map[string]string{}
		}
		byArchive[im.Archive][im.Name] = im.Digest
	}
	for archive, pins := range byArchive {
		got, err := fgruntime.ArchiveImages(filepath.Join(stage, filepath.FromSlash(archive)))
		if err != nil {
			return fmt.Errorf("%w: %v", ErrUnlisted, err)
		}
		if !maps.Equal(got, pins) {
			return fmt.Errorf("%w: image archive %s names %v, the manifest pins %v", ErrUnlisted, archive, got, pins)
		}
	}
	for _, f := range m.Files {
		if path.Dir(f.Path) == ImagesDir && strings.HasSuffix(f.Path, ".tar") && byArchive[f.Path] == nil {
			return fmt.Errorf("%w: image archive %s pins no image", ErrUnlisted, f.Path)
		}
	}
	return nil
}

// Install verifies the bundle (Verify), refuses a version that is not newer
// than the running one unless downgrades are allowed, copies it into the
// slot that is neither running nor committed, and switches to it: the new
// version goes on trial at the supervisor's next start (a running supervisor
// notices and restarts itself). A refusal changes nothing. A first
// installation is committed at once.
func (i *Installer) Install(bundlePath string) (*Installed, error) {
	unlock, err := i.store.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := i.store.State()
	if err != nil {
		return nil, err
	}
	target := SlotA
	var running *Manifest
	if st != nil {
		if st.Trial != nil {
			return nil, fmt.Errorf("%w: version %s (slot %s) must commit or roll back first; see fieldgate update --status",
				ErrOnTrial, st.Trial.Version, st.Current)
		}
		target = other(st.Current)
		if running, err = i.store.Manifest(st.Current); err != nil {
			i.log.Warn("running slot unreadable: version not compared", "slot", st.Current, "err", err)
		}
	}
	b, v, err := i.verifyManifest(bundlePath)
	if err != nil {
		return nil, err
	}
	m := v.Manifest
	res := &Installed{Version: m.Version, Slot: target, KeyFile: v.KeyFile}
	if running != nil {
		res.From = running.Version
		if c := compareVersions(m.Version, running.Version); c <= 0 && !i.allowDowngrade {
			what := "older than"
			if c == 0 {
				what = "the same as"
			}
			return nil, fmt.Errorf("%w from %s to %s refused: the bundle is %s the running version (give --allow-downgrade to install it anyway)",
				ErrDowngrade, running.Version, m.Version, what)
		}
	}
	stage := i.store.SlotDir(target) + stagingSuffix
	if err := os.RemoveAll(stage); err != nil {
		return nil, fmt.Errorf("staging: %w", err)
	}
	if err := os.MkdirAll(stage, 0o755); err != nil {
		return nil, fmt.Errorf("staging: %w", err)
	}
	staged := false
	defer func() {
		if !staged {
			os.RemoveAll(stage)
		}
	}()
	if err := i.checkFiles(b, v, stage); err != nil {
		return nil, err
	}
	if err := syncTree(stage); err != nil {
		return nil, fmt.Errorf("staging: %w", err)
	}
	// The target slot holds the version before the running one (or
	// nothing): it is replaced only now that the new one is complete.
	slot := i.store.SlotDir(target)
	if err := os.RemoveAll(slot); err != nil {
		return nil, fmt.Errorf("slot %q: %w", target, err)
	}
	if err := os.Rename(stage, slot); err != nil {
		return nil, fmt.Errorf("slot %q: %w", target, err)
	}
	staged = true
	if err := syncDir(i.store.Dir()); err != nil {
		return nil, err
	}
	i.log.Info("update staged", "version", m.Version, "slot", target, "key", v.KeyFile)
	i.stepHook(StepStaged)

	now := i.now().UTC()
	if st == nil {
		st = &State{Current: target, Committed: target,
			Last: &Result{Result: "committed", Version: m.Version, Reason: "first installation", At: now}}
	} else {
		st.Current = target
		st.Trial = &Trial{Version: m.Version, From: res.From, MaxBoots: i.bootAttempts, Since: now}
		res.Trial = true
	}
	if err := i.store.writeState(st); err != nil {
		return nil, err
	}
	i.log.Info("update switched", "version", m.Version, "slot", target, "trial", res.Trial)
	i.stepHook(StepSwitched)
	return res, nil
}

// syncTree syncs every directory under root (the files were synced as they
// were written), so the staged slot survives a power cut complete.
func syncTree(root string) error {
	return filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return syncDir(p)
		}
		return nil
	})
}
