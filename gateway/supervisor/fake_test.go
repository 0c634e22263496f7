package supervisor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// fakeRuntime implements Runtime in memory, with the contract's semantics
// (replace on hash change, adopt a running task, restart an exited one).
type fakeRuntime struct {
	mu         sync.Mutex
	containers map[string]*fakeContainer
	nextPid    uint32
	events     []string // "create a", "start a", "adopt a", "replace a", "remove a"
	startErr   map[string]error
}

type fakeContainer struct {
	spec Spec
	task *fakeTask
}

type fakeTask struct {
	pid     uint32
	started time.Time
	adopted bool
	done    chan struct{}
	exit    Exit
}

func newFakeRuntime() *fakeRuntime {
	return &fakeRuntime{containers: map[string]*fakeContainer{}, nextPid: 100, startErr: map[string]error{}}
}

func (f *fakeRuntime) Containers(ctx context.Context) ([]Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Container
	for name, c := range f.containers {
		ct := Container{Name: name, Labels: c.spec.Labels}
		if c.task != nil && !c.task.exited() {
			ct.Running, ct.Pid = true, c.task.pid
		}
		out = append(out, ct)
	}
	return out, nil
}

func (f *fakeRuntime) Start(ctx context.Context, spec Spec) (Task, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.startErr[spec.Name]; err != nil {
		return nil, err
	}
	c := f.containers[spec.Name]
	if c != nil && c.spec.Labels[LabelSpecHash] != spec.Labels[LabelSpecHash] {
		f.events = append(f.events, "replace "+spec.Name)
		c.task.kill(-1)
		c = nil
	}
	if c == nil {
		f.events = append(f.events, "create "+spec.Name)
		c = &fakeContainer{spec: spec}
		f.containers[spec.Name] = c
	}
	if c.task != nil && !c.task.exited() {
		f.events = append(f.events, "adopt "+spec.Name)
		t := *c.task
		t.adopted = true
		return &fakeHandle{t: c.task, info: TaskInfo{Pid: t.pid, StartedAt: t.started, Adopted: true, ImageDigest: "sha256:fake"}}, nil
	}
	f.nextPid++
	c.task = &fakeTask{pid: f.nextPid, started: time.Now(), done: make(chan struct{})}
	f.events = append(f.events, "start "+spec.Name)
	return &fakeHandle{t: c.task, info: TaskInfo{Pid: c.task.pid, StartedAt: c.task.started, ImageDigest: "sha256:fake"}}, nil
}

func (f *fakeRuntime) Remove(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
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
	t    *fakeTask
	info TaskInfo
}

func (h *fakeHandle) Info() TaskInfo { return h.info }

func (h *fakeHandle) Wait(ctx context.Context) (Exit, error) {
	select {
	case <-h.t.done:
		return h.t.exit, nil
	case <-ctx.Done():
		return Exit{}, ctx.Err()
	}
}

var errNoImage = errors.New(`image "docker.io/fieldgate/collector-modbus:missing" not found`)
