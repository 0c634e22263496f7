package supervisor

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// StateDirName is the supervisor's own directory under gateway.data_dir. No
// container mounts it (a collector gets only collectors/NAME), so what it
// holds — an operator's stop, restart counts — cannot be forged by a
// collector.
const StateDirName = "supervisor"

// stateFileName is the file of persisted collector state in the state dir.
const stateFileName = "state.json"

// maxStateBytes bounds what is read of the state file.
const maxStateBytes = 4 << 20

// stateVersion is the format of the state file.
const stateVersion = 1

// persisted is the state file: what must survive a supervisor restart and a
// reboot.
type persisted struct {
	Version    int                            `json:"version"`
	Collectors map[string]*persistedCollector `json:"collectors"`
}

// persistedCollector is one collector's durable state.
type persistedCollector struct {
	// OperatorStopped records `fieldgate stop`: the collector stays down
	// (for always: until the supervisor restarts, as in Docker).
	OperatorStopped bool       `json:"operator_stopped,omitempty"`
	StoppedAt       *time.Time `json:"stopped_at,omitempty"`
	// State is the last state shown (running, exited, crashloop, …).
	State        string     `json:"state"`
	Restarts     int        `json:"restarts"`
	Consecutive  int        `json:"consecutive"`
	FastFailures int        `json:"fast_failures"`
	LastExit     *Exit      `json:"last_exit,omitempty"`
	RestartAt    *time.Time `json:"restart_at,omitempty"`
	Recreations  int        `json:"recreations,omitempty"`
	// Identity is what the running container was created from: the parts
	// that cannot be resolved later (an unplugged device) are taken from it.
	Identity *Identity `json:"identity,omitempty"`
}

// stateStore reads and writes the state file atomically (temporary file,
// fsync, rename, fsync of the directory), 0600 in a 0700 directory.
type stateStore struct {
	dir  string
	last []byte // content last written or read
}

func newStateStore(dir string) *stateStore { return &stateStore{dir: dir} }

func (s *stateStore) path() string { return filepath.Join(s.dir, stateFileName) }

// load reads the state file. A missing file is an empty state; a file that
// is not a regular file, too large or not valid JSON is an error (the caller
// starts from an empty state and says so).
func (s *stateStore) load() (persisted, error) {
	p := persisted{Version: stateVersion, Collectors: map[string]*persistedCollector{}}
	f, err := os.OpenFile(s.path(), os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if errors.Is(err, os.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return p, fmt.Errorf("supervisor state %q: %w", s.path(), err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return p, fmt.Errorf("supervisor state %q is not a regular file", s.path())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxStateBytes+1))
	if err != nil {
		return p, fmt.Errorf("supervisor state %q: %w", s.path(), err)
	}
	if len(data) > maxStateBytes {
		return p, fmt.Errorf("supervisor state %q is larger than %d bytes", s.path(), maxStateBytes)
	}
	var got persisted
	if err := json.Unmarshal(data, &got); err != nil {
		return p, fmt.Errorf("supervisor state %q: %w", s.path(), err)
	}
	if got.Version != stateVersion {
		return p, fmt.Errorf("supervisor state %q: version %d, want %d", s.path(), got.Version, stateVersion)
	}
	for name, c := range got.Collectors {
		if c != nil {
			p.Collectors[name] = c
		}
	}
	s.last = data
	return p, nil
}

// save writes p unless it equals what was last written.
func (s *stateStore) save(p persisted) error {
	p.Version = stateVersion
	data, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	if bytes.Equal(data, s.last) {
		return nil
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("supervisor state dir: %w", err)
	}
	if fi, err := os.Lstat(s.dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("supervisor state dir %q is not a directory", s.dir)
	}
	if err := os.Chmod(s.dir, 0o700); err != nil {
		return fmt.Errorf("supervisor state dir: %w", err)
	}
	tmp, err := os.CreateTemp(s.dir, ".state-*.json")
	if err != nil {
		return fmt.Errorf("write supervisor state: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), s.path())
	}
	if err != nil {
		return fmt.Errorf("write supervisor state: %w", err)
	}
	if d, err := os.Open(s.dir); err == nil {
		_ = d.Sync() // the rename reaches the disk with the directory
		d.Close()
	}
	s.last = data
	return nil
}

// persist writes what must survive a restart of every collector (see
// persistedCollector). A failure is logged (once per distinct error) and
// never stops anything.
func (s *Supervisor) persist() {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	s.mu.Lock()
	p := persisted{Collectors: make(map[string]*persistedCollector, len(s.workers))}
	for name, w := range s.workers {
		st := &w.st
		pc := &persistedCollector{
			OperatorStopped: st.operatorStopped,
			StoppedAt:       st.StoppedAt,
			State:           st.State,
			Restarts:        st.Restarts,
			Consecutive:     st.consecutive,
			FastFailures:    st.fastFailures,
			LastExit:        st.LastExit,
			RestartAt:       st.RestartAt,
			Recreations:     st.Recreations,
		}
		if st.State == StateStarting {
			pc.State = StateRunning // a start under way is a task meant to run
		}
		if id := w.spec.Identity; id.ImageDigest != "" || len(id.Files) > 0 || len(id.Devices) > 0 {
			pc.Identity = &id
		}
		p.Collectors[name] = pc
	}
	s.mu.Unlock()
	err := s.store.save(p)
	switch {
	case err != nil && err.Error() != s.saveErr:
		s.log.Error("supervisor state not saved; restart counts and operator stops may not survive a restart", "dir", s.store.dir, "err", err)
		s.saveErr = err.Error()
	case err == nil && s.saveErr != "":
		s.log.Info("supervisor state saved again", "dir", s.store.dir)
		s.saveErr = ""
	}
}
