package testpeer

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// SparkplugHostConfig configures the Sparkplug host application
// (internal/testpeer/sparkplughost/host.mjs: Eclipse Tahu's
// sparkplug-payload and mqtt.js).
type SparkplugHostConfig struct {
	// Broker is "host:port".
	Broker string
	// HostID makes it a primary host application publishing
	// spBv1.0/STATE/HostID (will offline, birth online).
	HostID string
	// Offline starts a primary host without its online birth.
	Offline bool
	// User and Password authenticate it.
	User, Password string
}

// SparkplugMessage is one message the host received, decoded by Tahu.
type SparkplugMessage struct {
	Topic  string            `json:"topic"`
	Kind   string            `json:"kind"` // NBIRTH, DDATA, STATE, …
	Group  string            `json:"group"`
	Edge   string            `json:"edge"`
	Device string            `json:"device"`
	State  map[string]any    `json:"state"`
	Load   *SparkplugPayload `json:"payload"`
	Event  string            `json:"event"`
	Error  string            `json:"error"`
	// At is when the Go side read the line.
	At time.Time `json:"-"`
}

// SparkplugPayload is a payload as sparkplug-payload decodes it.
type SparkplugPayload struct {
	Timestamp *int64            `json:"timestamp"`
	Seq       *int64            `json:"seq"`
	Metrics   []SparkplugMetric `json:"metrics"`
}

// SparkplugMetric is one decoded metric; Value is a JSON number (64-bit
// integers beyond 2^53 as strings), bool, string or nil.
type SparkplugMetric struct {
	Name         string                       `json:"name"`
	Alias        *int64                       `json:"alias"`
	Type         string                       `json:"type"`
	Value        any                          `json:"value"`
	Timestamp    *int64                       `json:"timestamp"`
	IsHistorical bool                         `json:"isHistorical"`
	Properties   map[string]SparkplugProperty `json:"properties"`
}

// SparkplugProperty is one metric property.
type SparkplugProperty struct {
	Type  string `json:"type"`
	Value any    `json:"value"`
}

// Metric returns the payload's metric called name (nil if absent).
func (p *SparkplugPayload) Metric(name string) *SparkplugMetric {
	if p == nil {
		return nil
	}
	for i := range p.Metrics {
		if p.Metrics[i].Name == name {
			return &p.Metrics[i]
		}
	}
	return nil
}

// SparkplugHost is a running host application.
type SparkplugHost struct {
	t     testing.TB
	cmd   *exec.Cmd
	stdin io.WriteCloser
	log   *SyncBuffer

	mu   sync.Mutex
	msgs []SparkplugMessage
	cond chan struct{} // closed and replaced on every new line
}

func sparkplugHostDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "sparkplughost")
}

// SparkplugHost starts the host application and waits until it is
// subscribed (and, as a primary host, online). It calls Require(t, "node")
// and needs the npm packages that scripts/setup-node.sh installs: missing,
// the test is skipped, or fails under FIELDGATE_REQUIRE_ALL=1. The host is
// stopped when the test ends.
func StartSparkplugHost(t testing.TB, cfg SparkplugHostConfig) *SparkplugHost {
	t.Helper()
	Require(t, "node")
	dir := sparkplugHostDir()
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "sparkplug-payload", "package.json")); err != nil {
		Unavailable(t, "sparkplug-payload", fmt.Sprintf("sparkplug-payload is not installed in %s (run scripts/setup-node.sh)", dir))
	}
	args := []string{filepath.Join(dir, "host.mjs"), "--broker", "mqtt://" + cfg.Broker}
	if cfg.HostID != "" {
		args = append(args, "--host-id", cfg.HostID)
	}
	if cfg.Offline {
		args = append(args, "--offline")
	}
	if cfg.User != "" {
		args = append(args, "--user", cfg.User, "--password", cfg.Password)
	}
	h := &SparkplugHost{t: t, log: &SyncBuffer{}, cond: make(chan struct{})}
	h.cmd = exec.Command("node", args...)
	h.cmd.Stderr = h.log
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if h.stdin, err = h.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatalf("start sparkplug host: %v", err)
	}
	done := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(h.log, line)
			var m SparkplugMessage
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				continue
			}
			m.At = time.Now()
			h.mu.Lock()
			h.msgs = append(h.msgs, m)
			close(h.cond)
			h.cond = make(chan struct{})
			h.mu.Unlock()
		}
		_ = h.cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-h.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-h.cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("sparkplug host output:\n%s", h.log.String())
		}
	})
	h.WaitFor(30*time.Second, "the sparkplug host to be ready", func(m SparkplugMessage) bool { return m.Event == "ready" })
	return h
}

// Messages returns a copy of everything received so far, in order.
func (h *SparkplugHost) Messages() []SparkplugMessage {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]SparkplugMessage(nil), h.msgs...)
}

// Len is the number of lines received so far (a mark for Since).
func (h *SparkplugHost) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.msgs)
}

// Since returns the messages received after mark (a Len).
func (h *SparkplugHost) Since(mark int) []SparkplugMessage {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]SparkplugMessage(nil), h.msgs[min(mark, len(h.msgs)):]...)
}

// WaitFor waits until a message received after the host started matches
// and returns it; it fails the test after timeout.
func (h *SparkplugHost) WaitFor(timeout time.Duration, what string, match func(SparkplugMessage) bool) SparkplugMessage {
	h.t.Helper()
	return h.WaitSince(0, timeout, what, match)
}

// WaitSince is WaitFor over the messages received after mark (a Len).
func (h *SparkplugHost) WaitSince(mark int, timeout time.Duration, what string, match func(SparkplugMessage) bool) SparkplugMessage {
	h.t.Helper()
	deadline := time.After(timeout)
	next := mark
	for {
		h.mu.Lock()
		msgs, cond := h.msgs, h.cond
		h.mu.Unlock()
		for ; next < len(msgs); next++ {
			if msgs[next].Event == "error" {
				h.t.Errorf("sparkplug host: %s (%s)", msgs[next].Error, msgs[next].Topic)
			}
			if match(msgs[next]) {
				return msgs[next]
			}
		}
		select {
		case <-cond:
		case <-deadline:
			h.t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
	}
}

// Send gives the host a command (see host.mjs) and waits until it was
// carried out.
func (h *SparkplugHost) Send(cmd map[string]any) {
	h.t.Helper()
	b, err := json.Marshal(cmd)
	if err != nil {
		h.t.Fatal(err)
	}
	mark := h.Len()
	if _, err := h.stdin.Write(append(b, '\n')); err != nil {
		h.t.Fatalf("sparkplug host: %v", err)
	}
	name, _ := cmd["cmd"].(string)
	if name == "close" {
		h.WaitSince(mark, 20*time.Second, "the host to close", func(m SparkplugMessage) bool { return m.Event == "closed" })
		return
	}
	h.WaitSince(mark, 20*time.Second, "the host to do "+name, func(m SparkplugMessage) bool {
		return m.Event == "done" || (m.Event == "error" && strings.Contains(m.Error, "command"))
	})
}
