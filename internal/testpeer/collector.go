package testpeer

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildMu  sync.Mutex
	builtDir string
	built    = map[string]string{}
)

// GoBuild builds the command package pkg (e.g.
// "fieldgate/collectors/cmd/modbus-collector") once per test binary and
// returns the executable's path. The directory is removed by CleanBuilds.
func GoBuild(t testing.TB, pkg string) string { return GoBuildFlags(t, pkg, "") }

// GoBuildFlags is GoBuild with -ldflags (e.g. "-X main.version=2"): each
// package and flags pair is built once. Binaries are static
// (CGO_ENABLED=0), so they also run on an image's empty base.
func GoBuildFlags(t testing.TB, pkg, ldflags string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	key := pkg + " " + ldflags
	if bin, ok := built[key]; ok {
		return bin
	}
	if builtDir == "" {
		d, err := os.MkdirTemp("", "fieldgate-testbin")
		if err != nil {
			t.Fatal(err)
		}
		builtDir = d
	}
	bin := filepath.Join(builtDir, fmt.Sprint(len(built)), filepath.Base(pkg))
	args := []string{"build", "-o", bin}
	if ldflags != "" {
		args = append(args, "-ldflags", ldflags)
	}
	cmd := exec.Command("go", append(args, pkg)...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	built[key] = bin
	return bin
}

// CleanBuilds removes what GoBuild built; call it from TestMain.
func CleanBuilds() {
	buildMu.Lock()
	defer buildMu.Unlock()
	if builtDir != "" {
		os.RemoveAll(builtDir)
		builtDir = ""
		built = map[string]string{}
	}
}

// Collector is a collector process started by a test.
type Collector struct {
	t    testing.TB
	bin  string
	env  []string
	cmd  *exec.Cmd
	Log  *SyncBuffer
	done chan struct{}
}

// StartCollector runs bin with exactly env (KEY=VALUE) and stops it when
// the test ends (SIGTERM, SIGKILL after 10 s).
func StartCollector(t testing.TB, bin string, env ...string) *Collector {
	t.Helper()
	c := &Collector{t: t, bin: bin, env: env, Log: &SyncBuffer{}}
	c.Start()
	t.Cleanup(func() {
		c.Stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(bin), c.Log.String())
		}
	})
	return c
}

// Start (re)starts the stopped collector with the same environment.
func (c *Collector) Start() {
	c.t.Helper()
	c.cmd = exec.Command(c.bin)
	c.cmd.Env = c.env
	c.cmd.Stdout, c.cmd.Stderr = c.Log, c.Log
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	fmt.Fprintf(c.Log, "--- start %s\n", time.Now().Format(time.RFC3339Nano))
	if err := c.cmd.Start(); err != nil {
		c.t.Fatalf("start %s: %v", c.bin, err)
	}
	c.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(c.cmd, c.done)
}

// Stop stops the collector with SIGTERM (SIGKILL after 10 s) and waits.
func (c *Collector) Stop() { c.signal(syscall.SIGTERM) }

// Kill stops the collector with SIGKILL, as a crash would, and waits.
func (c *Collector) Kill() { c.signal(syscall.SIGKILL) }

func (c *Collector) signal(sig syscall.Signal) {
	if c.cmd == nil {
		return
	}
	_ = syscall.Kill(-c.cmd.Process.Pid, sig)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
	}
	c.cmd = nil
}

// Pid is the running collector's process id, 0 when it is not running.
func (c *Collector) Pid() int {
	if c.cmd == nil || c.cmd.Process == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// Output is what the collector printed so far.
func (c *Collector) Output() string { return c.Log.String() }

// Exited reports whether the collector has ended (by itself).
func (c *Collector) Exited() bool {
	if c.cmd == nil {
		return true
	}
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// Env returns a copy of env with KEY=VALUE pairs set (replacing KEY).
func Env(env []string, kv ...string) []string {
	out := append([]string(nil), env...)
	for _, s := range kv {
		k, _, _ := strings.Cut(s, "=")
		replaced := false
		for i := range out {
			if strings.HasPrefix(out[i], k+"=") {
				out[i], replaced = s, true
			}
		}
		if !replaced {
			out = append(out, s)
		}
	}
	return out
}
