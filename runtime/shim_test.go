package runtime_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"fieldgate/internal/testpeer"
)

// TestLeftoverShimReaped puts containerd in the state a task Delete leaves
// when its caller dies half-way (containerd issue 11392): the daemon has no
// task for the container, its shim runs on. Start must give the container a
// new task in a new shim, and Stop must leave no shim behind (without the
// reaping, the leftover shim serves the new task, and after the container's
// deletion runs on for good).
func TestLeftoverShimReaped(t *testing.T) {
	peer, rt := setup(t)
	ctx := context.Background()
	spec, _ := probeSpec(t, "leak")
	if _, err := rt.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	// leave kills the running task and leaves its shim behind.
	leave := func(pid uint32) int {
		t.Helper()
		exited, err := rt.Wait(ctx, "leak")
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(int(pid), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-exited
		shim := peer.Shims()["leak"]
		if shim == 0 {
			t.Fatal("no shim for the task")
		}
		peer.ForgetTask(t, t, "leak")
		if got := peer.Shims()["leak"]; got != shim {
			t.Fatalf("shim %d did not outlive the daemon (now %d)", shim, got)
		}
		return shim
	}

	info, err := rt.Start(ctx, "leak")
	if err != nil {
		t.Fatal(err)
	}
	old := leave(info.Pid)
	rt = newRuntime(t, peer)
	info, err = rt.Start(ctx, "leak")
	if err != nil {
		t.Fatalf("start after a forgotten task: %v", err)
	}
	if shim := peer.Shims()["leak"]; shim == 0 || shim == old || info.Pid == 0 {
		t.Errorf("after the start: shim %d (the leftover was %d), task pid %d", shim, old, info.Pid)
	}

	old = leave(info.Pid)
	rt = newRuntime(t, peer)
	if err := rt.Stop(ctx, "leak", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	testpeer.WaitFor(t, 10*time.Second, "the leftover shim to exit", func() bool { return peer.Shims()["leak"] == 0 })
}
