package update

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// On-disk layout, under {data_dir}/slots (a directory only root writes; no
// container mounts it):
//
//	a/, b/          two slots, each one complete verified bundle: manifest.json,
//	                its signature, the fieldgate binary, install.sh, images/*.tar
//	state.json      which slot runs, which is committed, the trial, the last result
//	current         symlink to the slot to run (what the systemd unit starts)
//	committed       symlink to the last committed slot (its binary is the boot selector)
//	lock            flock serialising every change of state.json
//	*.staging       a bundle being copied in (removed by the next install)
//
// state.json is the truth; it is replaced by an atomic rename, which is what
// switches binary and images together. The two symlinks follow it and are
// repaired by the boot selector before every start, so a power cut between
// the rename and the symlink update cannot start the wrong slot.

// Slot names.
const (
	SlotA = "a"
	SlotB = "b"
)

// Link names in the slots directory.
const (
	CurrentLink   = "current"
	CommittedLink = "committed"
	stateFile     = "state.json"
	lockFile      = "lock"
	stagingSuffix = ".staging"
	stateFormat   = 1
)

// State is state.json.
type State struct {
	Format int `json:"format"`
	// Current is the slot to run.
	Current string `json:"current"`
	// Committed is the last committed slot: where a rollback returns.
	Committed string `json:"committed"`
	// Trial is set while Current holds a version on trial.
	Trial *Trial `json:"trial,omitempty"`
	// Last is the outcome of the last installation.
	Last *Result `json:"last,omitempty"`
}

// Trial is a version on trial.
type Trial struct {
	Version string `json:"version"`
	From    string `json:"from"`
	// Boots counts the starts of the version (the boot selector adds one
	// before each); MaxBoots is update.boot_attempts when it was installed.
	Boots    int       `json:"boots"`
	MaxBoots int       `json:"max_boots"`
	Since    time.Time `json:"since"`
}

// Result is how an installation ended.
type Result struct {
	// Result is "committed" or "rolled_back".
	Result  string    `json:"result"`
	Version string    `json:"version"`
	From    string    `json:"from,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	At      time.Time `json:"at"`
}

// Store is the slots directory of a gateway.
type Store struct {
	dir string
}

// NewStore returns the store under dataDir/slots (nothing is created until
// the first installation).
func NewStore(dataDir string) *Store {
	return &Store{dir: filepath.Join(dataDir, "slots")}
}

// Dir is the slots directory.
func (s *Store) Dir() string { return s.dir }

// SlotDir is a slot's directory.
func (s *Store) SlotDir(slot string) string { return filepath.Join(s.dir, slot) }

// CurrentBinary is the path of the binary to run, through the current link.
func (s *Store) CurrentBinary() string { return filepath.Join(s.dir, CurrentLink, BinaryFile) }

// CommittedBinary is the last committed version's binary, through the
// committed link: a path stable across updates whose binary is known to
// work, which the containerd shims run as the collectors' log driver (a new
// version on trial that cannot even start must not keep a collector's task
// from starting).
func (s *Store) CommittedBinary() string { return filepath.Join(s.dir, CommittedLink, BinaryFile) }

// other is the slot that is not slot.
func other(slot string) string {
	if slot == SlotA {
		return SlotB
	}
	return SlotA
}

func validSlot(s string) bool { return s == SlotA || s == SlotB }

// State reads state.json; (nil, nil) when nothing is installed.
func (s *Store) State() (*State, error) {
	data, err := readBounded(filepath.Join(s.dir, stateFile), 64<<10, false)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("update state: %w", err)
	}
	// Not strict: a newer version may have added fields, and the older
	// committed version's boot selector must still read its state.
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("update state %q: %w", filepath.Join(s.dir, stateFile), err)
	}
	if !validSlot(st.Current) || !validSlot(st.Committed) {
		return nil, fmt.Errorf("update state %q: invalid slots current=%q committed=%q", filepath.Join(s.dir, stateFile), st.Current, st.Committed)
	}
	return &st, nil
}

// writeState replaces state.json atomically and durably, then makes the
// links follow it.
func (s *Store) writeState(st *State) error {
	st.Format = stateFormat
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(s.dir, stateFile), append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("update state: %w", err)
	}
	return s.syncLinks(st)
}

// syncLinks points the current and committed links at the slots st names
// (a link already right is left alone).
func (s *Store) syncLinks(st *State) error {
	for name, slot := range map[string]string{CurrentLink: st.Current, CommittedLink: st.Committed} {
		link := filepath.Join(s.dir, name)
		if target, err := os.Readlink(link); err == nil && target == slot {
			continue
		}
		tmp := link + ".tmp"
		os.Remove(tmp)
		if err := os.Symlink(slot, tmp); err != nil {
			return fmt.Errorf("update link %q: %w", name, err)
		}
		if err := os.Rename(tmp, link); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("update link %q: %w", name, err)
		}
	}
	return syncDir(s.dir)
}

// Manifest reads a slot's manifest (verified when the slot was staged).
func (s *Store) Manifest(slot string) (*Manifest, error) {
	data, err := readBounded(filepath.Join(s.SlotDir(slot), ManifestFile), maxManifestBytes, false)
	if err != nil {
		return nil, fmt.Errorf("slot %q: %w", slot, err)
	}
	m, err := ParseManifest(data)
	if err != nil {
		return nil, fmt.Errorf("slot %q: %w", slot, err)
	}
	return m, nil
}

// slotComplete reports whether a slot holds a readable manifest and its
// binary: what the boot selector checks before starting it.
func (s *Store) slotComplete(slot string) error {
	if _, err := s.Manifest(slot); err != nil {
		return err
	}
	st, err := os.Lstat(filepath.Join(s.SlotDir(slot), BinaryFile))
	if err != nil {
		return fmt.Errorf("slot %q: %w", slot, err)
	}
	if !st.Mode().IsRegular() || st.Mode()&0o100 == 0 {
		return fmt.Errorf("slot %q: %s is not an executable file", slot, BinaryFile)
	}
	return nil
}

// lockWait bounds the wait for the store's lock: an installation holds it
// while it copies a bundle (seconds); nothing may wait on a stuck one for
// ever — least of all the boot selector.
const lockWait = 2 * time.Minute

// lock takes the store's exclusive lock, creating the directory if needed,
// waiting at most lockWait; the returned function releases it.
func (s *Store) lock() (func(), error) {
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return nil, fmt.Errorf("slots dir: %w", err)
	}
	path := filepath.Join(s.dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|noFollow, 0o600)
	if err != nil {
		return nil, fmt.Errorf("update lock: %w", err)
	}
	for deadline := time.Now().Add(lockWait); ; {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("update lock %q (held by another fieldgate update?): %w", path, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}

// writeFileAtomic writes data to a temporary file beside path, syncs it,
// renames it over path and syncs the directory.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// equalState reports whether two states would be written the same.
func equalState(a, b *State) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}
