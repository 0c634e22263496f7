package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"fieldgate/gateway/config"
)

func TestPlanAtStart(t *testing.T) {
	now := time.Now()
	later := now.Add(30 * time.Second)
	running := &Container{Name: "a", Running: true}
	noTask := &Container{Name: "a"} // after a reboot
	exited := func(code int) *Container { return &Container{Name: "a", Exited: true, ExitCode: code, ExitedAt: now} }
	stopped := &persistedCollector{OperatorStopped: true, State: StateStopped}
	wasRunning := &persistedCollector{State: StateRunning}
	exited0 := &persistedCollector{State: StateExited, LastExit: &Exit{Code: 0}}
	looping := &persistedCollector{State: StateCrashLoop, RestartAt: &later, Restarts: 5}
	type want struct {
		leave      bool
		state      string
		died, stop bool
		delayed    bool
	}
	tests := []struct {
		name   string
		policy string
		c      *Container
		p      *persistedCollector
		want   want
	}{
		{"new collector", config.RestartNever, nil, nil, want{}},
		{"running is adopted", config.RestartNever, running, wasRunning, want{}},
		{"always after reboot", config.RestartAlways, noTask, wasRunning, want{died: true}},
		{"unless-stopped after reboot", config.RestartUnlessStopped, noTask, wasRunning, want{died: true}},
		{"unless-stopped after reboot, no state file", config.RestartUnlessStopped, noTask, nil, want{died: true}},
		{"on-failure after reboot", config.RestartOnFailure, noTask, wasRunning, want{died: true}},
		{"never after reboot", config.RestartNever, noTask, wasRunning, want{leave: true, state: StateExited}},
		{"on-failure exited 0 before the reboot", config.RestartOnFailure, noTask, exited0, want{leave: true, state: StateExited}},
		{"always exited 0 while away", config.RestartAlways, exited(0), wasRunning, want{died: true}},
		{"unless-stopped exited 0 while away", config.RestartUnlessStopped, exited(0), wasRunning, want{died: true}},
		{"on-failure exited 0 while away", config.RestartOnFailure, exited(0), wasRunning, want{leave: true, state: StateExited}},
		{"on-failure exited 1 while away", config.RestartOnFailure, exited(1), wasRunning, want{died: true}},
		{"never exited 1 while away", config.RestartNever, exited(1), wasRunning, want{leave: true, state: StateExited}},
		{"operator stop holds for unless-stopped", config.RestartUnlessStopped, noTask, stopped, want{leave: true, state: StateStopped}},
		{"operator stop holds for on-failure", config.RestartOnFailure, nil, stopped, want{leave: true, state: StateStopped}},
		{"operator stop holds for never", config.RestartNever, noTask, stopped, want{leave: true, state: StateStopped}},
		{"operator stop of a running unless-stopped stops it", config.RestartUnlessStopped, running, stopped, want{leave: true, state: StateStopped, stop: true}},
		{"operator stop holds for always", config.RestartAlways, noTask, stopped, want{leave: true, state: StateStopped}},
		{"crash loop back-off continues", config.RestartAlways, exited(1), looping, want{died: true, delayed: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := planAtStart(tt.policy, tt.c, tt.p, now, time.Minute)
			g := want{leave: got.leave, state: got.state, died: got.died, stop: got.stopRunning, delayed: got.delay > 0}
			if g != tt.want {
				t.Errorf("planAtStart = %+v, want %+v", g, tt.want)
			}
			if got.delay > time.Minute {
				t.Errorf("delay %v above the back-off maximum", got.delay)
			}
		})
	}
}

// TestRestartPolicyAfterReboot runs a collector per policy, stops the
// supervisor, "reboots" the fake runtime (containers stay, tasks vanish)
// and starts a new supervisor: always, unless-stopped and on-failure come
// back, never does not. The old TestUnlessStoppedLeftStopped asserted that
// unless-stopped stayed down here, which is not what it means.
func TestRestartPolicyAfterReboot(t *testing.T) {
	dir := t.TempDir()
	path := writeConfig(t, dir, col{"a", "1s", "always", ""}, col{"b", "1s", "unless-stopped", ""},
		col{"c", "1s", "on-failure", ""}, col{"d", "1s", "never", ""})
	rt := newFakeRuntime()
	r1 := start(t, load(t, path), rt)
	for _, n := range []string{"a", "b", "c", "d"} {
		waitFor(t, n+" running", stateIs(r1.sup, n, StateRunning))
	}
	r1.stop(t)
	rt.reboot()
	r2 := start(t, load(t, path), rt)
	for _, n := range []string{"a", "b", "c"} {
		waitFor(t, n+" running after the reboot", stateIs(r2.sup, n, StateRunning))
		if got := rt.count("start " + n); got != 2 {
			t.Errorf("%s started %d times, want 2: %v", n, got, rt.eventList())
		}
		if c, _ := collectorStatus(r2.sup, n); c.Adopted || c.Restarts != 1 {
			t.Errorf("%s: adopted %v restarts %d, want a counted restart", n, c.Adopted, c.Restarts)
		}
	}
	waitFor(t, "d exited", stateIs(r2.sup, "d", StateExited))
	if rt.count("start d") != 1 {
		t.Errorf("never restarted: %v", rt.eventList())
	}
}

// TestRestartPolicyExitedWhileAway: tasks that ended while the supervisor
// was down, with code 0 and 1.
func TestRestartPolicyExitedWhileAway(t *testing.T) {
	for _, code := range []int{0, 1} {
		t.Run(fmt.Sprint("exit ", code), func(t *testing.T) {
			dir := t.TempDir()
			path := writeConfig(t, dir, col{"a", "1s", "unless-stopped", ""}, col{"b", "1s", "on-failure", ""}, col{"c", "1s", "never", ""})
			rt := newFakeRuntime()
			r1 := start(t, load(t, path), rt)
			for _, n := range []string{"a", "b", "c"} {
				waitFor(t, n+" running", stateIs(r1.sup, n, StateRunning))
			}
			r1.stop(t)
			for _, n := range []string{"a", "b", "c"} {
				if err := rt.kill(n, code); err != nil {
					t.Fatal(err)
				}
			}
			r2 := start(t, load(t, path), rt)
			waitFor(t, "a running", stateIs(r2.sup, "a", StateRunning))
			if code == 0 {
				waitFor(t, "b exited", stateIs(r2.sup, "b", StateExited))
			} else {
				waitFor(t, "b running", stateIs(r2.sup, "b", StateRunning))
			}
			waitFor(t, "c exited", stateIs(r2.sup, "c", StateExited))
			for _, n := range []string{"b", "c"} {
				if c, _ := collectorStatus(r2.sup, n); c.LastExit == nil || c.LastExit.Code != code {
					t.Errorf("%s last_exit = %+v, want code %d", n, c.LastExit, code)
				}
			}
		})
	}
}

// TestOperatorStop: fieldgate stop keeps collectors of every policy down
// across a supervisor restart and a reboot; start undoes it.
func TestOperatorStop(t *testing.T) {
	dir := t.TempDir()
	path := writeConfig(t, dir, col{"a", "1s", "always", ""}, col{"b", "1s", "unless-stopped", ""}, col{"c", "1s", "on-failure", ""})
	rt := newFakeRuntime()
	r1 := start(t, load(t, path), rt)
	ctx := context.Background()
	for _, n := range []string{"a", "b", "c"} {
		waitFor(t, n+" running", stateIs(r1.sup, n, StateRunning))
	}
	if _, err := r1.sup.StopCollector(ctx, "nope"); !errors.Is(err, ErrUnknownCollector) || !strings.Contains(err.Error(), `"nope" (configured: a, b, c)`) {
		t.Errorf("stop of an unknown collector: %v", err)
	}
	for _, n := range []string{"a", "b", "c"} {
		st, err := r1.sup.StopCollector(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		if st.State != StateStopped || st.StoppedAt == nil || rt.pid(n) != 0 {
			t.Errorf("%s after stop: %+v, pid %d", n, st, rt.pid(n))
		}
	}
	if rt.count("remove b") != 1 {
		t.Errorf("events %v", rt.eventList())
	}
	// The stop is in the state file, 0600 in a 0700 directory.
	stateDir := filepath.Join(dir, "data", StateDirName)
	if fi, err := os.Stat(stateDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir: %v %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Join(stateDir, stateFileName)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state file: %v %v", fi.Mode(), err)
	}
	r1.stop(t)
	rt.reboot()

	r2 := start(t, load(t, path), rt)
	for _, n := range []string{"a", "b", "c"} {
		waitFor(t, n+" still stopped", stateIs(r2.sup, n, StateStopped))
		if got := rt.count("start " + n); got != 1 {
			t.Errorf("%s started %d times: %v", n, got, rt.eventList())
		}
	}
	st, err := r2.sup.StartCollector(ctx, "b")
	if err != nil || st.State != StateRunning {
		t.Fatalf("start b: %+v %v", st, err)
	}
	if st.StoppedAt != nil {
		t.Errorf("stopped_at kept: %v", st.StoppedAt)
	}
	// Starting a running collector changes nothing.
	pid := rt.pid("b")
	if _, err := r2.sup.StartCollector(ctx, "b"); err != nil || rt.pid("b") != pid {
		t.Errorf("second start: %v, pid %d -> %d", err, pid, rt.pid("b"))
	}
	r2.stop(t)
	r3 := start(t, load(t, path), rt)
	waitFor(t, "b adopted", func() bool { c, _ := collectorStatus(r3.sup, "b"); return c.State == StateRunning && c.Adopted })
	waitFor(t, "c stopped", stateIs(r3.sup, "c", StateStopped))
	idle, err := New(load(t, path), rt)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := idle.StopCollector(ctx, "a"); !errors.Is(err, ErrNotRunning) {
		t.Errorf("stop without Run: %v", err)
	}
}

// TestStatePersists: restart counts, the last exit and the crash-loop
// back-off survive a supervisor restart.
func TestStatePersists(t *testing.T) {
	dir := t.TempDir()
	path := writeConfig(t, dir, col{"a", "1s", "always", ""})
	rt := newFakeRuntime()
	// Back-offs of 200, 400 and 800 ms: the last one is still due when the
	// second supervisor starts.
	r1 := start(t, load(t, path), rt, WithBackoff(200*time.Millisecond, 5*time.Second, time.Hour), WithCrashLoop(3, time.Hour))
	for i := 1; i <= 3; i++ {
		waitFor(t, "running", stateIs(r1.sup, "a", StateRunning))
		if err := rt.kill("a", 3); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "exit seen", func() bool { c, _ := collectorStatus(r1.sup, "a"); return c.Restarts == i || c.State == StateCrashLoop })
	}
	waitFor(t, "crash loop", stateIs(r1.sup, "a", StateCrashLoop))
	before, _ := collectorStatus(r1.sup, "a")
	r1.stop(t)

	r2 := start(t, load(t, path), rt, WithBackoff(200*time.Millisecond, 5*time.Second, time.Hour), WithCrashLoop(3, time.Hour))
	waitFor(t, "a listed", func() bool { _, ok := collectorStatus(r2.sup, "a"); return ok })
	c, _ := collectorStatus(r2.sup, "a")
	if c.State != StateCrashLoop || c.RestartAt == nil {
		t.Errorf("after restart: state %s restart_at %v, want the crash loop's back-off to continue", c.State, c.RestartAt)
	}
	waitFor(t, "running again", stateIs(r2.sup, "a", StateRunning))
	c, _ = collectorStatus(r2.sup, "a")
	if c.Restarts != before.Restarts+1 || c.LastExit == nil || c.LastExit.Code != 3 {
		t.Errorf("restarts %d (before %d), last exit %+v", c.Restarts, before.Restarts, c.LastExit)
	}
	// The back-off exponent went on too: the next exit waits longer than the base.
	r2.sup.mu.Lock()
	cons := r2.sup.workers["a"].st.consecutive
	r2.sup.mu.Unlock()
	if cons < 3 {
		t.Errorf("back-off exponent %d after the restart, want it kept", cons)
	}
}

// TestStateFileUnreadable: a corrupt or foreign state file never stops the
// supervisor; it starts from an empty state.
func TestStateFileUnreadable(t *testing.T) {
	for name, setup := range map[string]func(path string) error{
		"garbage":   func(p string) error { return os.WriteFile(p, []byte("{not json"), 0o600) },
		"fifo":      func(p string) error { return syscall.Mkfifo(p, 0o600) },
		"symlink":   func(p string) error { return os.Symlink("/etc/hostname", p) },
		"version 9": func(p string) error { return os.WriteFile(p, []byte(`{"version":9}`), 0o600) },
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := writeConfig(t, dir, col{"a", "1s", "always", ""})
			stateDir := filepath.Join(dir, "data", StateDirName)
			if err := os.MkdirAll(stateDir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := setup(filepath.Join(stateDir, stateFileName)); err != nil {
				t.Fatal(err)
			}
			rt := newFakeRuntime()
			r := start(t, load(t, path), rt)
			waitFor(t, "running", stateIs(r.sup, "a", StateRunning))
			waitFor(t, "the state file rewritten", func() bool {
				fi, err := os.Lstat(filepath.Join(stateDir, stateFileName))
				return err == nil && fi.Mode().IsRegular()
			})
		})
	}
}

// TestImageTagMoves: the tag moves to a new digest while the collector runs
// (an upgrade's import); the identity check recreates it on the new digest,
// /status shows both digests, and the prune hook is called once every
// collector runs its configured digest.
func TestImageTagMoves(t *testing.T) {
	dir := t.TempDir()
	rt := newFakeRuntime()
	pruned := make(chan []string, 10)
	prune := func(ctx context.Context, inUse []string) error { pruned <- inUse; return nil }
	r := start(t, load(t, writeConfig(t, dir, col{"a", "1s", "always", ""}, col{"b", "1s", "always", ""})), rt, WithPrune(prune))
	waitFor(t, "running on digest 1", func() bool {
		a, _ := collectorStatus(r.sup, "a")
		return a.State == StateRunning && a.ImageDigest == fakeDigest1 && a.ConfiguredDigest == fakeDigest1 && a.DigestMatches
	})
	if got := <-pruned; !slices.Equal(got, []string{fakeDigest1}) {
		t.Errorf("first prune keeps %v", got)
	}
	rt.mu.Lock()
	rt.startDelay = 20 * time.Millisecond // lets overlapping recreations show
	rt.mu.Unlock()
	rt.tag(fakeImage, fakeDigest2)
	for _, n := range []string{"a", "b"} {
		waitFor(t, n+" recreated on digest 2", func() bool {
			c, _ := collectorStatus(r.sup, n)
			return c.State == StateRunning && c.ImageDigest == fakeDigest2 && c.DigestMatches && !c.Adopted
		})
	}
	if got := <-pruned; !slices.Equal(got, []string{fakeDigest2}) {
		t.Errorf("prune after the upgrade keeps %v, want only the new digest", got)
	}
	if rt.count("replace a") != 1 || rt.count("replace b") != 1 {
		t.Errorf("events %v", rt.eventList())
	}
	rt.mu.Lock()
	maxActive := rt.maxActive
	rt.mu.Unlock()
	if maxActive != 1 {
		t.Errorf("%d runtime changes at once, want one collector at a time", maxActive)
	}
}

// TestUpgradeAtStart: the tag moved while the supervisor was down (a new
// bundle, then `systemctl restart`): the collectors are recreated at start,
// one at a time, not adopted on the old digest.
func TestUpgradeAtStart(t *testing.T) {
	dir := t.TempDir()
	path := writeConfig(t, dir, col{"a", "1s", "unless-stopped", ""}, col{"b", "1s", "always", ""}, col{"c", "1s", "on-failure", ""})
	names := []string{"a", "b", "c"}
	rt := newFakeRuntime()
	r1 := start(t, load(t, path), rt, WithIdentityInterval(0))
	for _, n := range names {
		waitFor(t, n+" running", stateIs(r1.sup, n, StateRunning))
	}
	r1.stop(t)
	rt.tag(fakeImage, fakeDigest2)
	rt.mu.Lock()
	rt.startDelay, rt.maxActive = 20*time.Millisecond, 0 // lets overlapping starts show
	rt.mu.Unlock()
	r2 := start(t, load(t, path), rt, WithIdentityInterval(0))
	for _, n := range names {
		waitFor(t, n+" recreated on digest 2", func() bool {
			c, _ := collectorStatus(r2.sup, n)
			return c.State == StateRunning && c.ImageDigest == fakeDigest2 && c.DigestMatches
		})
		if c, _ := collectorStatus(r2.sup, n); c.Adopted {
			t.Errorf("%s adopted on the old digest", n)
		}
		if rt.count("replace "+n) != 1 {
			t.Errorf("events %v", rt.eventList())
		}
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.maxActive != 1 {
		t.Errorf("%d collectors recreated at once, want one at a time", rt.maxActive)
	}
}

// TestImageGoneIsNoChange: a tag that resolves to nothing for a while (an
// archive being re-imported) does not stop a running collector.
func TestImageGoneIsNoChange(t *testing.T) {
	dir := t.TempDir()
	rt := newFakeRuntime()
	r := start(t, load(t, writeConfig(t, dir, col{"a", "1s", "always", ""})), rt)
	waitFor(t, "running", stateIs(r.sup, "a", StateRunning))
	pid := rt.pid("a")
	rt.mu.Lock()
	delete(rt.images, fakeImage)
	rt.mu.Unlock()
	waitFor(t, "configured digest gone", func() bool { c, _ := collectorStatus(r.sup, "a"); return c.ConfiguredDigest == "" })
	rt.waitIdentityChecks(t, 3)
	if rt.pid("a") != pid {
		t.Errorf("collector recreated while its image was absent: %v", rt.eventList())
	}
}

// TestSecretChangeRecreates: new content in the MQTT password file (the
// file replaced, as an editor does) recreates every collector mounting it.
func TestSecretChangeRecreates(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "mqtt.pass")
	if err := os.WriteFile(pw, []byte("one\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rt := newFakeRuntime()
	r := start(t, load(t, writeConfigMQTT(t, dir, fmt.Sprintf(", username: gw, password_file: %q", pw), col{"a", "1s", "always", ""})), rt)
	waitFor(t, "running", stateIs(r.sup, "a", StateRunning))
	pid := rt.pid("a")
	hash := specOf(r.sup, "a").Labels[LabelSpecHash]
	if err := os.WriteFile(pw+".new", []byte("two\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(pw+".new", pw); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "recreated", func() bool {
		c, _ := collectorStatus(r.sup, "a")
		return c.State == StateRunning && c.Pid != pid && c.SpecHash != hash
	})
	if rt.count("replace a") != 1 {
		t.Errorf("events %v", rt.eventList())
	}
}

// TestDeviceReplug: the node behind a configured device link changes (a
// re-plugged adapter or pty): the collector is recreated on the new node.
// A link that leads nowhere for a while (unplugged) changes nothing.
func TestDeviceReplug(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "serial-by-id")
	if err := os.Symlink("/dev/null", link); err != nil {
		t.Fatal(err)
	}
	rt := newFakeRuntime()
	r := start(t, load(t, writeConfig(t, dir, col{"a", "1s", "always", fmt.Sprintf("%q", link+":/dev/ttyUSB0")})), rt)
	waitFor(t, "running", stateIs(r.sup, "a", StateRunning))
	c, _ := collectorStatus(r.sup, "a")
	if len(c.Devices) != 1 || c.Devices[0].Node != "/dev/null" || c.Devices[0].Path != link {
		t.Fatalf("devices = %+v", c.Devices)
	}
	pid := rt.pid("a")

	// Unplugged: the link goes; nothing is recreated.
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	rt.waitIdentityChecks(t, 3)
	if rt.pid("a") != pid {
		t.Fatalf("recreated while unplugged: %v", rt.eventList())
	}
	// Plugged back as another node.
	if err := os.Symlink("/dev/zero", link); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "recreated on the new node", func() bool {
		c, _ := collectorStatus(r.sup, "a")
		return c.State == StateRunning && c.Pid != pid && len(c.Devices) == 1 && c.Devices[0].Node == "/dev/zero"
	})
	if rt.count("replace a") != 1 {
		t.Errorf("events %v", rt.eventList())
	}
}

// TestDeviceMovesBetweenCollectors: a reload that moves a device from a to
// b stops a before b starts on it.
func TestDeviceMovesBetweenCollectors(t *testing.T) {
	dir := t.TempDir()
	dev := fmt.Sprintf("%q", "/dev/null:/dev/ttyUSB0")
	rt := newFakeRuntime()
	path := writeConfig(t, dir, col{"a", "1s", "always", dev}, col{"b", "1s", "always", ""})
	r := start(t, load(t, path), rt)
	waitFor(t, "running", func() bool { return stateIs(r.sup, "a", StateRunning)() && stateIs(r.sup, "b", StateRunning)() })
	writeConfig(t, dir, col{"b", "1s", "always", dev}, col{"a", "1s", "always", ""})
	waitFor(t, "reloaded", func() bool { return r.sup.Status().ReloadsOK == 1 })
	waitFor(t, "both recreated", func() bool {
		a, _ := collectorStatus(r.sup, "a")
		b, _ := collectorStatus(r.sup, "b")
		return a.State == StateRunning && b.State == StateRunning && len(b.Devices) == 1 && len(a.Devices) == 0
	})
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if len(rt.violations) > 0 {
		t.Errorf("two owners of a device: %v (events %v)", rt.violations, rt.events)
	}
}

func TestResolveIdentity(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "pass")
	big := filepath.Join(dir, "big")
	fifo := filepath.Join(dir, "fifo")
	certs := filepath.Join(dir, "certs")
	if err := os.WriteFile(secret, []byte("pw"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(big, make([]byte, MaxSecretBytes+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(certs, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(certs, "ca.pem"), []byte("ca"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "tty")
	if err := os.Symlink("/dev/null", link); err != nil {
		t.Fatal(err)
	}
	spec := Spec{Name: "a", Image: fakeImage, ConfigFile: "/cfg",
		Mounts: []Mount{
			{Source: "/cfg", Destination: ContainerConfigPath, ReadOnly: true},
			{Source: dir, Destination: ContainerDataDir},
			{Source: secret, Destination: "/s", ReadOnly: true},
			{Source: big, Destination: "/b", ReadOnly: true},
			{Source: certs, Destination: "/c", ReadOnly: true},
		},
		Devices: []config.Device{{Host: link, Container: "/dev/ttyUSB0"}},
	}
	rt := newFakeRuntime()
	id, err := ResolveIdentity(context.Background(), rt, &spec)
	if err != nil {
		t.Fatal(err)
	}
	if id.ImageDigest != fakeDigest1 || len(id.Files) != 3 || len(id.Devices) != 1 {
		t.Fatalf("identity = %+v", id)
	}
	for _, f := range id.Files {
		if !strings.HasPrefix(f.Digest, "sha256:") {
			t.Errorf("file %s digest %q", f.Path, f.Digest)
		}
	}
	if d := id.Devices[0]; d.Node != "/dev/null" || d.Major != 1 || d.Minor != 3 {
		t.Errorf("device = %+v", d)
	}
	// Each part changes the identity.
	os.WriteFile(filepath.Join(certs, "ca.pem"), []byte("ca2"), 0o600)
	os.WriteFile(secret, []byte("pw2"), 0o600)
	rt.tag(fakeImage, fakeDigest2)
	id2, _ := ResolveIdentity(context.Background(), rt, &spec)
	changes := IdentityChanges(id, id2)
	if len(changes) != 3 {
		t.Errorf("changes = %q", changes)
	}
	// A FIFO does not block and is an unresolved part, kept from before by
	// MergeIdentity; so is an absent image.
	spec.Mounts = append(spec.Mounts, Mount{Source: fifo, Destination: "/f", ReadOnly: true})
	delete(rt.images, fakeImage)
	done := make(chan struct{})
	var id3 Identity
	go func() { id3, err = ResolveIdentity(context.Background(), rt, &spec); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("ResolveIdentity blocked on a FIFO")
	}
	if err == nil || !strings.Contains(err.Error(), fifo) || id3.ImageDigest != "" || id3.Files[3].Digest != "" {
		t.Errorf("fifo: %+v %v", id3, err)
	}
	merged := MergeIdentity(Identity{ImageDigest: fakeDigest2, Files: []FileDigest{{Path: fifo, Digest: "sha256:old"}}}, id3)
	if merged.ImageDigest != fakeDigest2 || merged.Files[3].Digest != "sha256:old" {
		t.Errorf("merged = %+v", merged)
	}
}

// TestRuntimeOutage: the runtime's daemon dies and comes back while the
// supervisor runs (a containerd crash or upgrade). What became of the task
// meanwhile decides, as if the supervisor had watched it: a task that runs
// on is adopted, not restarted; an exit goes by the restart policy and is
// counted; a task the daemon lost comes back unless the policy is never.
func TestRuntimeOutage(t *testing.T) {
	code := func(c int) *int { return &c }
	for _, tc := range []struct {
		name         string
		restart      string
		during       func(rt *fakeRuntime) error // what happens to the task while the daemon is down
		wantState    string
		wantRestarts int
		wantExit     *int // nil: no exit recorded
		wantSamePid  bool
	}{
		{"task runs on", "on-failure", nil, StateRunning, 0, nil, true},
		{"exit 3, on-failure", "on-failure", func(rt *fakeRuntime) error { return rt.kill("a", 3) }, StateRunning, 1, code(3), false},
		{"exit 0, on-failure", "on-failure", func(rt *fakeRuntime) error { return rt.kill("a", 0) }, StateExited, 0, code(0), false},
		{"exit 0, always", "always", func(rt *fakeRuntime) error { return rt.kill("a", 0) }, StateRunning, 1, code(0), false},
		{"exit 137, never", "never", func(rt *fakeRuntime) error { return rt.kill("a", 137) }, StateExited, 0, code(137), false},
		{"task lost, unless-stopped", "unless-stopped", func(rt *fakeRuntime) error { return rt.loseTask("a") }, StateRunning, 1, nil, false},
		{"task lost, never", "never", func(rt *fakeRuntime) error { return rt.loseTask("a") }, StateExited, 0, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			rt := newFakeRuntime()
			r := start(t, load(t, writeConfig(t, dir, col{"a", "1s", tc.restart, ""})), rt)
			waitFor(t, "running", stateIs(r.sup, "a", StateRunning))
			pid := rt.pid("a")

			rt.crashDaemon()
			waitFor(t, "the lost watch shown", func() bool {
				c, _ := collectorStatus(r.sup, "a")
				return c.State == StateError && strings.Contains(c.LastError, "connection refused")
			})
			if tc.during != nil {
				if err := tc.during(rt); err != nil {
					t.Fatal(err)
				}
			}
			rt.restoreDaemon()

			var c CollectorStatus
			waitFor(t, tc.wantState, func() bool {
				c, _ = collectorStatus(r.sup, "a")
				return c.State == tc.wantState && (tc.wantState != StateRunning || tc.wantSamePid == (rt.pid("a") == pid))
			})
			if c.Restarts != tc.wantRestarts {
				t.Errorf("restarts = %d, want %d", c.Restarts, tc.wantRestarts)
			}
			switch {
			case tc.wantExit == nil && c.LastExit != nil:
				t.Errorf("last_exit = %+v, want none", c.LastExit)
			case tc.wantExit != nil && (c.LastExit == nil || c.LastExit.Code != *tc.wantExit):
				t.Errorf("last_exit = %+v, want code %d", c.LastExit, *tc.wantExit)
			}
			if tc.wantSamePid && (!c.Adopted || rt.count("start a") != 1) {
				t.Errorf("adopted %v, events %v; want the running task adopted", c.Adopted, rt.eventList())
			}
			if tc.wantState == StateExited && rt.count("start a") != 1 {
				t.Errorf("restarted against its policy: %v", rt.eventList())
			}
		})
	}
}
