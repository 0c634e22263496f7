package supervisor

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"fieldgate/gateway/config"
	"fieldgate/internal/nofollow"
)

// A collector's data dir is bind-mounted read-write into its container:
// everything in it is untrusted. The supervisor runs as root, so it reads
// there only through package nofollow (no link followed, regular files only,
// bounded) and never while holding its lock; what it writes for a collector
// lives outside it.

// Bounds of the supervisor's reading of a collector's status.json.
const (
	// maxReportSize is far above a real report (a few hundred bytes per
	// device), far below what would hurt the supervisor.
	maxReportSize = 256 << 10
	// reportTimeout bounds one Status call's wait for every report: /status,
	// /metrics and the MQTT status must answer even if a read hangs.
	reportTimeout = 500 * time.Millisecond
)

// reportReader reads the collectors' status.json files for Status: in
// parallel, with a deadline, one read at most in flight per collector (a
// read stuck in the kernel is not started again), and each kind of problem
// logged once per collector.
type reportReader struct {
	log      *slog.Logger
	timeout  time.Duration
	readFile func(root, name string, max int64) ([]byte, error) // nofollow.ReadFile

	mu       sync.Mutex
	inflight map[string]bool
	logged   map[string]bool // collector + "\x00" + problem kind
}

func newReportReader(log *slog.Logger) *reportReader {
	return &reportReader{log: log, timeout: reportTimeout, readFile: nofollow.ReadFile, inflight: map[string]bool{}, logged: map[string]bool{}}
}

// readAll returns the reports of the collectors named in dirs (name → data
// dir) that could be read within the deadline. A missing, foreign, oversized
// or invalid file is no report.
func (r *reportReader) readAll(dirs map[string]string) map[string]json.RawMessage {
	type result struct {
		name string
		raw  json.RawMessage
	}
	results := make(chan result, len(dirs))
	pending := map[string]bool{}
	for name, dir := range dirs {
		if r.testAndSet(r.inflight, name) {
			continue // the last read has not returned
		}
		pending[name] = true
		go func() { // ends when the read does; bounded to one per collector
			raw := r.read(name, dir)
			r.mu.Lock()
			delete(r.inflight, name)
			r.mu.Unlock()
			results <- result{name, raw}
		}()
	}
	out := make(map[string]json.RawMessage, len(dirs))
	timer := time.NewTimer(r.timeout)
	defer timer.Stop()
	for len(pending) > 0 {
		select {
		case res := <-results:
			delete(pending, res.name)
			if res.raw != nil {
				out[res.name] = res.raw
			}
		case <-timer.C:
			for name := range pending {
				r.problem(name, "timeout", fmt.Errorf("not read within %v", r.timeout))
			}
			return out
		}
	}
	return out
}

// read reads one collector's report.
func (r *reportReader) read(name, dir string) json.RawMessage {
	raw, err := r.readFile(dir, collectorStatusFile, maxReportSize)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil // not written yet
	case errors.Is(err, nofollow.ErrLink):
		r.problem(name, "link", err)
		return nil
	case errors.Is(err, nofollow.ErrNotRegular):
		r.problem(name, "not regular", err)
		return nil
	case errors.Is(err, nofollow.ErrTooLarge):
		r.problem(name, "too large", err)
		return nil
	case err != nil:
		r.problem(name, "unreadable", err)
		return nil
	}
	raw = bytes.TrimSpace(raw)
	if !json.Valid(raw) || len(raw) == 0 || raw[0] != '{' {
		// The publisher replaces the file atomically: a torn one is foreign.
		r.problem(name, "not a JSON object", nil)
		return nil
	}
	return json.RawMessage(raw)
}

// testAndSet sets m[key] under r.mu and tells whether it was set already.
func (r *reportReader) testAndSet(m map[string]bool, key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	was := m[key]
	m[key] = true
	return was
}

// problem logs a kind of problem with a collector's files once.
func (r *reportReader) problem(name, kind string, err error) {
	if r.testAndSet(r.logged, name+"\x00"+kind) {
		return
	}
	args := []any{"collector", name, "file", collectorStatusFile, "problem", kind}
	if err != nil {
		args = append(args, "err", err)
	}
	r.log.Warn("collector status file ignored (logged once)", args...)
}

// ConfigFilePath is the host path of the collector file the supervisor
// writes for collector name from its protocol section:
// {data_dir}/config/NAME.yaml, outside the collector's data dir so that the
// collector can neither change it nor replace it with a link that the next
// bind mount would follow.
func ConfigFilePath(cfg *config.Config, name string) string {
	return filepath.Join(cfg.Gateway.DataDir, "config", name+".yaml")
}

// LogPath is the host path of collector name's log file:
// {data_dir}/logs/NAME/collector.log, outside every directory a container
// can write (the log driver writes it as root).
func LogPath(cfg *config.Config, name string) string {
	return filepath.Join(cfg.Gateway.DataDir, "logs", name, "collector.log")
}

// LegacyLogDir and LegacyLogName locate the logs of earlier versions,
// {data_dir}/collectors/NAME/logs/collector.log — inside the data dir, so
// they are read only beneath it without following links
// (logrotate.LastLinesBeneath).
func LegacyLogDir(cfg *config.Config, name string) string { return cfg.CollectorDir(name) }

// LegacyLogName is the legacy log's name beneath LegacyLogDir.
const LegacyLogName = "logs/collector.log"

// PrivateDir is where the runtime keeps copies of read-only files a
// collector's non-root user could not read itself (runtime.WithPrivateDir):
// {data_dir}/private, root's alone.
func PrivateDir(cfg *config.Config) string {
	return filepath.Join(cfg.Gateway.DataDir, "private")
}

// writeFiles creates the collector's data dir (0700; the runtime gives it to
// the collector's user) and writes its config file, 0600 in a 0700
// directory of the supervisor's — atomically, and only when its content
// changed, so a running container's bind mount keeps pointing at identical
// content. A config file an earlier version wrote into the data dir is
// removed (without following a link).
func writeFiles(spec *Spec) error {
	if err := os.MkdirAll(spec.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	if dir, err := nofollow.OpenDir(spec.DataDir); err == nil {
		_ = nofollow.Remove(dir, "collector.yaml")
		dir.Close()
	}
	confDir := filepath.Dir(spec.ConfigFile)
	if err := os.MkdirAll(confDir, 0o700); err != nil {
		return fmt.Errorf("write collector config: %w", err)
	}
	// Bounded by the new content's size: a longer old file differs anyway.
	if old, err := nofollow.ReadFile(confDir, filepath.Base(spec.ConfigFile), int64(len(spec.Config))); err == nil && bytes.Equal(old, spec.Config) {
		return nil
	}
	tmp, err := os.CreateTemp(confDir, ".collector-*.yaml")
	if err != nil {
		return fmt.Errorf("write collector config: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(spec.Config); err != nil {
		tmp.Close()
		return fmt.Errorf("write collector config: %w", err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write collector config: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write collector config: %w", err)
	}
	if err := os.Rename(tmp.Name(), spec.ConfigFile); err != nil {
		return fmt.Errorf("write collector config: %w", err)
	}
	return nil
}
