package supervisor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// fakeRuntime implements Runtime and ImageResolver in memory, with the
// contract's semantics: replace on hash change (old task stopped first),
// adopt a running task, restart an exited one; image tags point to digests
// that can move (tag), and a reboot (reboot) leaves the containers without
// tasks. It records when a device node would have two owners and how many
// runtime changes ran at once.
type fakeRuntime struct {
	mu         sync.Mutex
	containers map[string]*fakeContainer
	nextPid    uint32
	events     []string // "create a", "start a", "adopt a", "replace a", "remove a"
	startErr   map[string]error
	images     map[string]string // image ref -> digest
	violations []string          // two owners of a device node
	active     int               // Start/Remove calls under way
	maxActive  int
	startDelay time.Duration // each Start takes this long
	lookups    int           // ImageDigest calls: the identity checks so far
	// outage is closed while the daemon is down (crashDaemon): every call
	// fails and every Wait returns an error, while tasks run on.
	outage chan struct{}
}

var errDaemonDown = errors.New("connection error: dial unix containerd.sock: connect: connection refused")

type fakeContainer struct {
	spec   Spec
	digest string // the image digest it was created from
	task   *fakeTask
}

type fakeTask struct {
	pid     uint32
	started time.Time
	done    chan struct{}
	exit    Exit
}

const (
	fakeImage   = "fieldgate/collector-modbus:latest"
	fakeDigest1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	fakeDigest2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

func newFakeRuntime() *fakeRuntime {
	return &fakeRuntime{containers: map[string]*fakeContainer{}, nextPid: 100, startErr: map[string]error{},
		images: map[string]string{fakeImage: fakeDigest1}, outage: make(chan struct{})}
}

func (f *fakeRuntime) ImageDigest(ctx context.Context, ref string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups++
	if f.downLocked() {
		return "", errDaemonDown
	}
	d, ok := f.images[ref]
	if !ok {
		return "", fmt.Errorf("image %q: %w", ref, errNoImage)
	}
	return d, nil
}

// tag points image ref at digest, as importing a new archive does.
func (f *fakeRuntime) tag(ref, digest string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.images[ref] = digest
}

// reboot makes every task vanish at once, without an exit status, as a power
// cut does; containers stay.
func (f *fakeRuntime) reboot() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.containers {
		if c.task != nil {
			c.task.kill(-1)
			c.task = nil
		}
	}
	f.events = append(f.events, "reboot")
}

// crashDaemon takes the daemon down as a containerd crash does: tasks run
// on (kill and loseTask still act on them), the runtime answers nothing.
func (f *fakeRuntime) crashDaemon() {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.outage)
	f.events = append(f.events, "daemon down")
}

// restoreDaemon brings the daemon back after crashDaemon.
func (f *fakeRuntime) restoreDaemon() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.outage = make(chan struct{})
	f.events = append(f.events, "daemon up")
}

func (f *fakeRuntime) downLocked() bool {
	select {
	case <-f.outage:
		return true
	default:
		return false
	}
}

// loseTask leaves the collector's container without a task and without an
// exit status, as a daemon that lost its state does.
func (f *fakeRuntime) loseTask(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.containers[name]
	if c == nil || c.task == nil {
		return fmt.Errorf("no task %q", name)
	}
	c.task.kill(-1)
	c.task = nil
	return nil
}

func (f *fakeRuntime) Containers(ctx context.Context) ([]Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.downLocked() {
		return nil, errDaemonDown
	}
	var out []Container
	for name, c := range f.containers {
		ct := Container{Name: name, Labels: c.spec.Labels}
		switch {
		case c.task == nil:
		case !c.task.exited():
			ct.Running, ct.Pid = true, c.task.pid
		default:
			ct.Exited, ct.ExitCode, ct.ExitedAt = true, c.task.exit.Code, c.task.exit.At
		}
		out = append(out, ct)
	}
	return out, nil
}

func (f *fakeRuntime) enter() {
	f.mu.Lock()
	f.active++
	f.maxActive = max(f.maxActive, f.active)
	d := f.startDelay
	f.mu.Unlock()
	time.Sleep(d)
}

func (f *fakeRuntime) leave() {
	f.mu.Lock()
	f.active--
	f.mu.Unlock()
}

func (f *fakeRuntime) Start(ctx context.Context, spec Spec) (Task, error) {
	f.enter()
	defer f.leave()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.downLocked() {
		return nil, errDaemonDown
	}
	if err := f.startErr[spec.Name]; err != nil {
		return nil, err
	}
	c := f.containers[spec.Name]
	if c != nil && c.spec.Labels[LabelSpecHash] != spec.Labels[LabelSpecHash] {
		f.events = append(f.events, "replace "+spec.Name)
		c.task.kill(-1)
		delete(f.containers, spec.Name)
		c = nil
	}
	if c == nil {
		digest, ok := f.images[spec.Image]
		if !ok {
			return nil, errNoImage
		}
		if spec.Identity.ImageDigest != digest {
			// The real runtime refuses a container whose image is not the
			// digest the identity names.
			return nil, fmt.Errorf("image %q is %s, not %s", spec.Image, digest, spec.Identity.ImageDigest)
		}
		f.events = append(f.events, "create "+spec.Name)
		c = &fakeContainer{spec: spec, digest: digest}
		f.containers[spec.Name] = c
	}
	if c.task != nil && !c.task.exited() {
		f.events = append(f.events, "adopt "+spec.Name)
		t := c.task
		return &fakeHandle{f: f, t: t, info: TaskInfo{Pid: t.pid, StartedAt: t.started, Adopted: true, ImageDigest: c.digest}}, nil
	}
	// Two running tasks must never hold one device node.
	for name, o := range f.containers {
		if name == spec.Name || o.task == nil || o.task.exited() {
			continue
		}
		for _, d := range o.spec.Identity.Devices {
			for _, n := range spec.Identity.Devices {
				if d.Node != "" && d.Node == n.Node {
					f.violations = append(f.violations, fmt.Sprintf("%s started on %s while %s holds it", spec.Name, n.Node, name))
				}
			}
		}
	}
	f.nextPid++
	c.task = &fakeTask{pid: f.nextPid, started: time.Now(), done: make(chan struct{})}
	f.events = append(f.events, "start "+spec.Name)
	return &fakeHandle{f: f, t: c.task, info: TaskInfo{Pid: c.task.pid, StartedAt: c.task.started, ImageDigest: c.digest}}, nil
}

func (f *fakeRuntime) Remove(ctx context.Context, name string) error {
	f.enter()
	defer f.leave()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.downLocked() {
		return errDaemonDown
	}
	c := f.containers[name]
	if c == nil {
		return nil
	}
	c.task.kill(-1)
	delete(f.containers, name)
	f.events = append(f.events, "remove "+name)
	return nil
}

// kill makes the collector's task exit with code.
func (f *fakeRuntime) kill(name string, code int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.containers[name]
	if c == nil || c.task == nil || c.task.exited() {
		return fmt.Errorf("no running task %q", name)
	}
	c.task.kill(code)
	return nil
}

func (f *fakeRuntime) pid(name string) uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.containers[name]
	if c == nil || c.task == nil || c.task.exited() {
		return 0
	}
	return c.task.pid
}

func (f *fakeRuntime) eventList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.events...)
}

func (f *fakeRuntime) count(event string) int {
	n := 0
	for _, e := range f.eventList() {
		if e == event {
			n++
		}
	}
	return n
}

func (t *fakeTask) exited() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

func (t *fakeTask) kill(code int) {
	if t == nil || t.exited() {
		return
	}
	t.exit = Exit{Code: code, At: time.Now()}
	close(t.done)
}

type fakeHandle struct {
	f    *fakeRuntime
	t    *fakeTask
	info TaskInfo
}

func (h *fakeHandle) Info() TaskInfo { return h.info }

func (h *fakeHandle) Wait(ctx context.Context) (Exit, error) {
	h.f.mu.Lock()
	outage := h.f.outage
	h.f.mu.Unlock()
	select {
	case <-outage:
		return Exit{}, fmt.Errorf("wait: %w", errDaemonDown)
	case <-h.t.done:
		return h.t.exit, nil
	case <-ctx.Done():
		return Exit{}, ctx.Err()
	}
}

var errNoImage = errors.New(`image "docker.io/fieldgate/collector-modbus:missing" not found`)

// waitIdentityChecks waits until the supervisor has resolved image digests
// n more times: enough identity checks for a wrong recreation to show.
func (f *fakeRuntime) waitIdentityChecks(t *testing.T, n int) {
	t.Helper()
	f.mu.Lock()
	target := f.lookups + n
	f.mu.Unlock()
	waitFor(t, fmt.Sprintf("%d identity checks", n), func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.lookups >= target
	})
}
