package testpeer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cgroupRoot is where the cgroup hierarchies are mounted. runc puts a task
// of namespace NS and container ID in NS/ID below each controller (cgroup
// v1) or below the root (v2): containerd's default cgroups path without CRI.
const cgroupRoot = "/sys/fs/cgroup"

// shimExitGrace bounds how long verifyClean waits for shims that are
// exiting after their task was deleted.
const shimExitGrace = 10 * time.Second

// runcRoot is runc's state root; runc keeps /run/containerd/runc/NS/ID
// whatever containerd's state dir is.
const runcRoot = "/run/containerd/runc"

// Reboot is a power cut and a boot as far as the container runtime can
// tell: KillAll (daemon, shims, tasks), then what a reboot empties goes —
// the tasks' mounts, containerd's state dir, runc's state of the namespace
// and the tasks' cgroups — and the daemon starts again on its root
// (Restart; owner as there). Containers and snapshots stay, as on disk. It
// returns the task pids it killed.
func (p *ContainerdPeer) Reboot(t, owner testing.TB) []int {
	t.Helper()
	tasks := p.KillAll(t)
	state := filepath.Join(p.Dir, "state")
	ctrdUnmountBelow(state)
	if err := os.RemoveAll(state); err != nil {
		t.Fatalf("containerd peer: reboot: empty the state dir: %v", err)
	}
	if err := os.RemoveAll(filepath.Join(runcRoot, p.Namespace)); err != nil {
		t.Fatalf("containerd peer: reboot: runc state: %v", err)
	}
	if _, err := removeCgroups(p.Namespace, true); err != nil {
		t.Fatalf("containerd peer: reboot: cgroups: %v", err)
	}
	p.Restart(t, owner)
	return tasks
}

// verifyClean runs after the daemon stopped: it looks for everything of
// this peer that outlived it — shims, their processes, mounts, runc state,
// cgroups with containers — removes it and reports each as a test error,
// so a leak is a failure rather than a process left on the machine. Empty
// per-namespace directories (runc's, the cgroups') are removed silently.
func (p *ContainerdPeer) verifyClean(t testing.TB) {
	var leaks []string
	_, shims := p.pids()
	// A shim told to shut down by the task's deletion exits on its own a
	// moment later (on a loaded machine, after the daemon stopped): give it
	// shimExitGrace before calling it a leak.
	for deadline := time.Now().Add(shimExitGrace); len(shims) > 0 && time.Now().Before(deadline); _, shims = p.pids() {
		time.Sleep(50 * time.Millisecond)
	}
	if len(shims) > 0 {
		set := map[int]bool{}
		for _, s := range shims {
			set[s] = true
		}
		tasks := childrenOf(set)
		leaks = append(leaks, fmt.Sprintf("containerd-shim processes %v of containers %v (with processes %v) still running after the daemon stopped", shims, p.shimIDs(shims), tasks))
		all := append(append([]int(nil), shims...), tasks...)
		for _, pid := range all {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		deadline := time.Now().Add(10 * time.Second)
		for _, pid := range all {
			for processAlive(pid) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	if points := mountsBelow(p.Dir, p.Namespace); len(points) > 0 {
		leaks = append(leaks, fmt.Sprintf("mounts left: %s", strings.Join(points, ", ")))
	}
	ctrdUnmountBelow(p.Dir)
	runc := filepath.Join(runcRoot, p.Namespace)
	if entries, err := os.ReadDir(runc); err == nil && len(entries) > 0 {
		names := make([]string, 0, len(entries))
		for _, e := range entries {
			names = append(names, e.Name())
		}
		leaks = append(leaks, fmt.Sprintf("runc state left in %s: %s", runc, strings.Join(names, ", ")))
	}
	_ = os.RemoveAll(runc)
	left, err := removeCgroups(p.Namespace, false)
	if len(left) > 0 {
		leaks = append(leaks, fmt.Sprintf("container cgroups left: %s", strings.Join(left, ", ")))
	}
	if err != nil {
		leaks = append(leaks, err.Error())
	}
	for _, l := range leaks {
		t.Errorf("containerd peer %s (namespace %s): %s", p.Dir, p.Namespace, l)
	}
	if len(leaks) > 0 {
		t.Logf("containerd peer log tail (%s):\n%s", p.LogPath, ctrdTailFile(p.LogPath, 80))
	}
}

// shimIDs are the -id arguments of the shim processes.
func (p *ContainerdPeer) shimIDs(pids []int) []string {
	var ids []string
	for _, pid := range pids {
		raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
		if err == nil {
			ids = append(ids, argAfter(strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00"), "-id"))
		}
	}
	return ids
}

// mountsBelow lists the mount points under dir or naming namespace.
func mountsBelow(dir, namespace string) []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var points []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/") || strings.Contains(f[4], "/"+namespace+"/")) {
			points = append(points, f[4])
		}
	}
	return points
}

// removeCgroups removes the cgroups of namespace in every hierarchy,
// deepest first; containers' cgroups (those below the namespace's) are
// returned unless expected. A cgroup that still holds processes cannot be
// removed: its processes are killed first and that is an error.
func removeCgroups(namespace string, expected bool) (containers []string, err error) {
	var dirs []string
	for _, base := range cgroupBases() {
		ns := filepath.Join(base, namespace)
		if _, err := os.Stat(ns); err != nil {
			continue
		}
		_ = filepath.WalkDir(ns, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
	}
	var errs []error
	seen := map[string]bool{}
	for i := len(dirs) - 1; i >= 0; i-- {
		dir := dirs[i]
		rel := strings.TrimPrefix(dir[strings.Index(dir, namespace):], namespace)
		if rel != "" && !expected && !seen[rel] {
			seen[rel] = true
			containers = append(containers, namespace+rel)
		}
		if procs := cgroupProcs(dir); len(procs) > 0 {
			errs = append(errs, fmt.Errorf("cgroup %s still holds processes %v: killed", dir, procs))
			for _, pid := range procs {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		var rmErr error
		for try := 0; try < 50; try++ {
			if rmErr = syscall.Rmdir(dir); rmErr == nil || errors.Is(rmErr, syscall.ENOENT) {
				rmErr = nil
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if rmErr != nil {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dir, rmErr))
		}
	}
	return containers, errors.Join(errs...)
}

// cgroupBases are the hierarchies to look in: every v1 controller
// directory, or the v2 root.
func cgroupBases() []string {
	if _, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers")); err == nil {
		return []string{cgroupRoot}
	}
	entries, err := os.ReadDir(cgroupRoot)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, filepath.Join(cgroupRoot, e.Name()))
		}
	}
	return out
}

func cgroupProcs(dir string) []int {
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(data)) {
		if pid, err := strconv.Atoi(f); err == nil {
			out = append(out, pid)
		}
	}
	return out
}
