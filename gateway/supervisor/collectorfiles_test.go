package supervisor

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// logRecorder keeps the messages of warnings, for "logged once" checks.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		return nil
	}
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
	l.mu.Lock()
	l.msgs = append(l.msgs, b.String())
	l.mu.Unlock()
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

func (l *logRecorder) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if strings.Contains(m, substr) {
			n++
		}
	}
	return n
}

// TestStatusIgnoresHostileReports: what a compromised collector can leave
// as its status.json — a link to a host JSON file or to /dev/zero, a FIFO,
// a huge file, a directory — is no report, never blocks Status and is
// logged once per kind.
func TestStatusIgnoresHostileReports(t *testing.T) {
	dir := t.TempDir()
	cfg := load(t, writeConfig(t, dir, col{"a", "1s", "always", ""}))
	rec := &logRecorder{}
	r := start(t, cfg, newFakeRuntime(), WithLogger(slog.New(rec)))
	waitFor(t, "a running", stateIs(r.sup, "a", StateRunning))
	data := specOf(r.sup, "a").DataDir
	report := filepath.Join(data, collectorStatusFile)
	hostJSON := filepath.Join(t.TempDir(), "host.json")
	if err := os.WriteFile(hostJSON, []byte(`{"canary":"host file"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		plant func() error
		kind  string
	}{
		{"link to a host JSON file", func() error { return os.Symlink(hostJSON, report) }, "problem=link"},
		{"link to /dev/zero", func() error { return os.Symlink("/dev/zero", report) }, "problem=link"},
		{"FIFO", func() error { return syscall.Mkfifo(report, 0o644) }, "problem=not regular"},
		{"directory", func() error { return os.Mkdir(report, 0o755) }, "problem=not regular"},
		{"oversized", func() error {
			return os.WriteFile(report, append([]byte(`{"x":"`), bytes.Repeat([]byte("y"), maxReportSize)...), 0o644)
		}, "problem=too large"},
		{"not an object", func() error { return os.WriteFile(report, []byte(`"just a string"`), 0o644) }, "problem=not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.RemoveAll(report)
			if err := tt.plant(); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 3; i++ {
				t0 := time.Now()
				st := r.sup.Status()
				if d := time.Since(t0); d > 2*time.Second {
					t.Errorf("Status took %v", d)
				}
				if rep := st.Collectors[0].Report; rep != nil {
					t.Errorf("report passed through: %.80s", rep)
				}
			}
			if n := rec.count(tt.kind); n != 1 {
				t.Errorf("%d warnings with %s, want exactly 1", n, tt.kind)
			}
		})
	}
	os.RemoveAll(report)
	if err := os.WriteFile(report, []byte(`{"state":"online"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if rep := r.sup.Status().Collectors[0].Report; string(rep) != `{"state":"online"}` {
		t.Errorf("a good report after the hostile ones: %s", rep)
	}
}

// TestStatusReadsReportsOutsideTheLock: a report read that hangs (a file
// system that stalls) costs Status its deadline, not the supervisor's lock,
// and is not started again while it hangs.
func TestStatusReadsReportsOutsideTheLock(t *testing.T) {
	dir := t.TempDir()
	cfg := load(t, writeConfig(t, dir, col{"a", "1s", "always", ""}, col{"b", "1s", "always", ""}))
	rec := &logRecorder{}
	r := start(t, cfg, newFakeRuntime(), WithLogger(slog.New(rec)))
	waitFor(t, "a running", stateIs(r.sup, "a", StateRunning))
	waitFor(t, "b running", stateIs(r.sup, "b", StateRunning))
	if err := os.WriteFile(filepath.Join(specOf(r.sup, "b").DataDir, collectorStatusFile), []byte(`{"state":"online"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	defer close(release)
	var mu sync.Mutex
	calls := map[string]int{}
	r.sup.reports.readFile = func(root, name string, max int64) ([]byte, error) {
		mu.Lock()
		calls[filepath.Base(root)]++
		mu.Unlock()
		if filepath.Base(root) == "a" {
			<-release // stuck in the kernel
		}
		return os.ReadFile(filepath.Join(root, name))
	}
	r.sup.reports.timeout = 200 * time.Millisecond
	done := make(chan Status)
	go func() { done <- r.sup.Status() }()
	// While a's read hangs, everything that needs the lock goes on.
	locked := make(chan struct{})
	go func() { r.sup.Config(); r.sup.Reload(); close(locked) }()
	select {
	case <-locked:
	case <-time.After(2 * time.Second):
		t.Fatal("the supervisor's lock is held during a report read")
	}
	var st Status
	select {
	case st = <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Status waited for a hanging read past its deadline")
	}
	if st.Collectors[0].Report != nil || string(st.Collectors[1].Report) != `{"state":"online"}` {
		t.Errorf("reports a=%s b=%s; want none for a, b's", st.Collectors[0].Report, st.Collectors[1].Report)
	}
	r.sup.Status()
	mu.Lock()
	if calls["a"] != 1 || calls["b"] != 2 {
		t.Errorf("reads a=%d b=%d: a hanging read must not be started again", calls["a"], calls["b"])
	}
	mu.Unlock()
	if n := rec.count("problem=timeout"); n != 1 {
		t.Errorf("%d timeout warnings, want 1", n)
	}
}

// TestWriteFilesOutsideDataDir: the collector file is the supervisor's
// (0600, outside the data dir), the data dir is 0700, and a config file an
// earlier version left in the data dir — or a link planted there — is removed
// without being followed.
func TestWriteFilesOutsideDataDir(t *testing.T) {
	dir := t.TempDir()
	cfg := load(t, writeConfig(t, dir, col{"a", "1s", "always", ""}))
	spec := BuildSpec(cfg, &cfg.Collectors[0])
	if strings.HasPrefix(spec.ConfigFile, spec.DataDir+"/") || strings.HasPrefix(spec.LogPath, spec.DataDir+"/") {
		t.Fatalf("config %s or log %s inside the data dir %s", spec.ConfigFile, spec.LogPath, spec.DataDir)
	}
	canary := filepath.Join(t.TempDir(), "canary")
	if err := os.WriteFile(canary, []byte("CANARY"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(spec.DataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(canary, filepath.Join(spec.DataDir, "collector.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := writeFiles(&spec); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(canary); string(got) != "CANARY" {
		t.Errorf("canary changed: %q", got)
	}
	if _, err := os.Lstat(filepath.Join(spec.DataDir, "collector.yaml")); !os.IsNotExist(err) {
		t.Errorf("legacy collector.yaml left in the data dir: %v", err)
	}
	st, err := os.Stat(spec.ConfigFile)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config file: %v, %v; want 0600", st, err)
	}
	if got, _ := os.ReadFile(spec.ConfigFile); !bytes.Equal(got, spec.Config) {
		t.Errorf("config content %q", got)
	}
	for _, d := range []string{filepath.Dir(spec.ConfigFile)} {
		if st, err := os.Stat(d); err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v, %v; want 0700", d, st, err)
		}
	}
	// Unchanged content: the file (and a bind mount of it) stays as it is.
	before, _ := os.Stat(spec.ConfigFile)
	if err := writeFiles(&spec); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.Stat(spec.ConfigFile); !os.SameFile(before, after) {
		t.Error("unchanged config rewritten")
	}
}
