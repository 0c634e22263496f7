package testpeer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/ttrpc"
)

// KillAll cuts the power of the peer's container runtime as far as a test
// can: it SIGKILLs the daemon, every containerd-shim serving it and every
// process those shims run (the containers' tasks), all pids collected first
// and killed back to back, and waits until they are gone. The daemon's root
// and state stay as they were; Restart brings the daemon back on them.
// It returns the task pids it killed.
func (p *ContainerdPeer) KillAll(t testing.TB) []int {
	t.Helper()
	daemon, shims := p.pids()
	if daemon == 0 {
		t.Fatalf("containerd peer: no daemon running with %s", p.configPath())
	}
	shimSet := map[int]bool{}
	for _, s := range shims {
		shimSet[s] = true
	}
	tasks := childrenOf(shimSet)
	all := append(append([]int{daemon}, shims...), tasks...)
	for _, pid := range all {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	WaitFor(t, 10*time.Second, "containerd, its shims and tasks to die", func() bool {
		for _, pid := range all {
			if processAlive(pid) {
				return false
			}
		}
		return true
	})
	return tasks
}

// Restart starts the daemon again on the same root, state, socket and
// namespace after KillAll (or a crash), waits until it serves, and stops it
// again (containers removed first) when owner ends: pass the test that owns
// the peer, so that the daemon outlives a subtest t.
func (p *ContainerdPeer) Restart(t, owner testing.TB) {
	t.Helper()
	if daemon, _ := p.pids(); daemon != 0 {
		t.Fatalf("containerd peer: Restart while the daemon (pid %d) is running", daemon)
	}
	logf, err := os.OpenFile(p.LogPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatalf("containerd peer: %v", err)
	}
	cmd := exec.Command(containerdBinary, "--config", p.configPath(), "--log-level", "info")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("containerd peer: restart %s: %v", containerdBinary, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(exited)
	}()
	// Registered after the original cleanup, so it runs first: containers
	// go while the daemon serves, then the daemon stops; the original
	// cleanup then finds its daemon gone and only removes the directories.
	owner.Cleanup(func() {
		select {
		case <-exited:
			return
		default:
		}
		if err := p.removeContainers(); err != nil {
			owner.Logf("containerd peer: removing leftover containers: %v", err)
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	client, err := p.waitServing(exited, 30*time.Second)
	if err != nil {
		t.Fatalf("containerd peer: restart: %v\n%s", err, ctrdTailFile(p.LogPath, 30))
	}
	client.Close()
}

func (p *ContainerdPeer) configPath() string { return filepath.Join(p.Dir, "config.toml") }

// pids finds the daemon (started with this peer's config) and the shims
// (started with this peer's socket as -address) in /proc.
func (p *ContainerdPeer) pids() (daemon int, shims []int) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		switch {
		case args[0] == containerdBinary && argAfter(args, "--config") == p.configPath():
			daemon = pid
		case strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") && argAfter(args, "-address") == p.Address:
			shims = append(shims, pid)
		}
	}
	return daemon, shims
}

func argAfter(args []string, flag string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			return args[i+1]
		}
	}
	return ""
}

// childrenOf returns the processes whose parent is in parents.
func childrenOf(parents map[int]bool) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so cut at the last ')'.
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil && parents[ppid] {
			out = append(out, pid)
		}
	}
	return out
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || !strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z")
}

// TaskPids returns the pid of every running task in the peer's namespace,
// by container id (containers without a running task are left out).
func (p *ContainerdPeer) TaskPids(t testing.TB) map[string]uint32 {
	t.Helper()
	client, err := containerd.New(p.Address, containerd.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatalf("containerd peer: %v", err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), p.Namespace), 10*time.Second)
	defer cancel()
	ctrs, err := client.Containers(ctx)
	if err != nil {
		t.Fatalf("containerd peer: list containers: %v", err)
	}
	out := map[string]uint32{}
	for _, c := range ctrs {
		task, err := c.Task(ctx, nil)
		if err != nil {
			continue
		}
		if st, err := task.Status(ctx); err == nil && st.Status == containerd.Running {
			out[c.ID()] = task.Pid()
		}
	}
	return out
}

// ForgetTask leaves the daemon without a record of container id's task
// while the task's shim runs on with nothing to serve — the state containerd
// 1.6 is left in when the caller of a task Delete dies half-way (containerd
// issue 11392): the shim has deleted the task, containerd has dropped it from
// its list, the shim never got its Shutdown. ForgetTask SIGKILLs the daemon,
// has the shim delete the task over its socket, removes the task's bundle
// from the state dir and starts the daemon again (owner as in Restart). The
// task must have exited.
func (p *ContainerdPeer) ForgetTask(t, owner testing.TB, id string) {
	t.Helper()
	p.KillDaemon(t)
	// The shim's socket is named as containerd's runtime v2 names it.
	sum := sha256.Sum256([]byte(filepath.Join(p.Address, p.Namespace, id)))
	conn, err := net.DialTimeout("unix", filepath.Join("/run/containerd/s", hex.EncodeToString(sum[:])), time.Second)
	if err != nil {
		t.Fatalf("containerd peer: shim of %q: %v", id, err)
	}
	client := ttrpc.NewClient(conn)
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), p.Namespace), 10*time.Second)
	_, err = taskapi.NewTaskClient(client).Delete(ctx, &taskapi.DeleteRequest{ID: id})
	cancel()
	client.Close()
	if err != nil {
		t.Fatalf("containerd peer: shim of %q: delete task: %v", id, err)
	}
	bundle := filepath.Join(p.Dir, "state", "io.containerd.runtime.v2.task", p.Namespace, id)
	ctrdUnmountBelow(bundle)
	if err := os.RemoveAll(bundle); err != nil {
		t.Fatalf("containerd peer: remove bundle of %q: %v", id, err)
	}
	p.Restart(t, owner)
}

// KillDaemon SIGKILLs the peer's containerd alone, as a crash or a
// `systemctl restart containerd` with KillMode=process leaves it: shims and
// tasks run on. Restart brings the daemon back.
func (p *ContainerdPeer) KillDaemon(t testing.TB) {
	t.Helper()
	daemon, _ := p.pids()
	if daemon == 0 {
		t.Fatalf("containerd peer: no daemon running with %s", p.configPath())
	}
	_ = syscall.Kill(daemon, syscall.SIGKILL)
	WaitFor(t, 10*time.Second, "containerd to die", func() bool { return !processAlive(daemon) })
}

// Shims returns the pid of every shim serving this peer, by container id.
func (p *ContainerdPeer) Shims() map[string]int {
	_, pids := p.pids()
	out := map[string]int{}
	for i, id := range p.shimIDs(pids) {
		out[id] = pids[i]
	}
	return out
}
