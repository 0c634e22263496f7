package update

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"fieldgate/gateway/supervisor"
)

// fakeSupervisor reports the collectors a test sets.
type fakeSupervisor struct {
	mu  sync.Mutex
	col []supervisor.CollectorStatus
}

func (f *fakeSupervisor) Status() supervisor.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return supervisor.Status{Collectors: append([]supervisor.CollectorStatus(nil), f.col...)}
}

func (f *fakeSupervisor) set(c ...supervisor.CollectorStatus) {
	f.mu.Lock()
	f.col = c
	f.mu.Unlock()
}

type fakeBroker struct{ up bool }

func (b *fakeBroker) Connected() bool { return b.up }

// fakeImages is an image store holding refs.
type fakeImages struct{ refs []ImageRef }

func (f *fakeImages) PruneImages(_ context.Context, keep []string) ([]string, error) {
	var kept []ImageRef
	var deleted []string
	for _, r := range f.refs {
		if slices.Contains(keep, r.Digest) {
			kept = append(kept, r)
		} else {
			deleted = append(deleted, r.Name)
		}
	}
	f.refs = kept
	return deleted, nil
}

// clock is a settable time.
type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }
func report(connected bool, published uint64, ts time.Time) json.RawMessage {
	b, _ := json.Marshal(map[string]any{"state": "online", "ts": ts.UnixMilli(),
		"mqtt": map[string]any{"connected": connected, "published": published}})
	return b
}

// healthyCollector runs the image the trial's slot pins.
func healthyCollector(g *gateway, t *testing.T, started time.Time) supervisor.CollectorStatus {
	m, err := g.store.Manifest(SlotB)
	if err != nil {
		t.Fatal(err)
	}
	return supervisor.CollectorStatus{Name: "modbus-line3", Image: "fieldgate/collector-modbus:latest",
		ImageDigest: m.Pins()["docker.io/fieldgate/collector-modbus:latest"], State: supervisor.StateRunning,
		Pid: 42, StartedAt: &started, Report: report(true, 7, started.Add(time.Second))}
}

func newTestMonitor(t *testing.T, g *gateway, slot string, sup *fakeSupervisor, br *fakeBroker, c *clock, opts ...MonitorOption) *Monitor {
	t.Helper()
	m, err := NewMonitor(g.store, slot, time.Minute, 10*time.Second, sup, br, append([]MonitorOption{WithClock(c.now)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestMonitorCommitsWhenHealthy(t *testing.T) {
	g := onTrial(t, 3)
	c := &clock{t: time.Unix(1764345600, 0)}
	sup := &fakeSupervisor{}
	br := &fakeBroker{up: true}
	v1, _ := g.store.Manifest(SlotA)
	v2, _ := g.store.Manifest(SlotB)
	imgs := &fakeImages{refs: []ImageRef{
		{Name: "docker.io/fieldgate/collector-modbus:latest", Digest: v2.Pins()["docker.io/fieldgate/collector-modbus:latest"]},
		{Name: "docker.io/fieldgate/collector-modbus:1", Digest: v1.Pins()["docker.io/fieldgate/collector-modbus:1"]},
		{Name: "docker.io/fieldgate/collector-modbus:2", Digest: v2.Pins()["docker.io/fieldgate/collector-modbus:2"]},
		{Name: "docker.io/fieldgate/collector-modbus:0", Digest: "sha256:" + strings.Repeat("0", 64)},
	}}
	changes := 0
	m := newTestMonitor(t, g, SlotB, sup, br, c, WithImagePruner(imgs), WithOnChange(func() { changes++ }))
	sup.set(healthyCollector(g, t, c.t))
	ctx := context.Background()
	if err := m.step(ctx); err != nil {
		t.Fatal(err)
	}
	st := m.Status()
	if st.State != supervisor.UpdateTrial || !strings.Contains(st.Trial.Waiting, `collector "modbus-line3" healthy for 0s of 10s`) ||
		st.Trial.Deadline == nil || !st.Trial.Deadline.Equal(c.t.Add(time.Minute)) {
		t.Fatalf("status = %+v %+v", st, st.Trial)
	}
	c.add(5 * time.Second)
	m.step(ctx)
	if g.state(t).Trial == nil {
		t.Fatal("committed before healthy_for")
	}
	c.add(5 * time.Second)
	if err := m.step(ctx); err != nil {
		t.Fatal(err)
	}
	s := g.state(t)
	if s.Trial != nil || s.Committed != SlotB || s.Last.Result != "committed" || s.Last.Version != "2" || s.Last.From != "1" {
		t.Fatalf("state after commit = %+v %+v", s, s.Last)
	}
	if st := m.Status(); st.State != supervisor.UpdateCommitted || st.Current.Version != "2" || st.Previous.Version != "1" {
		t.Errorf("status after commit = %+v", st)
	}
	// The old image (no slot pins it) is gone; both slots' images stay.
	var names []string
	for _, r := range imgs.refs {
		names = append(names, r.Name)
	}
	sort.Strings(names)
	if got := strings.Join(names, " "); got != "docker.io/fieldgate/collector-modbus:1 docker.io/fieldgate/collector-modbus:2 docker.io/fieldgate/collector-modbus:latest" {
		t.Errorf("images after prune: %s", got)
	}
	if changes < 2 {
		t.Errorf("status changes signalled: %d", changes)
	}
}

func TestMonitorWaits(t *testing.T) {
	g := onTrial(t, 3)
	c := &clock{t: time.Unix(1764345600, 0)}
	start := c.t
	tests := []struct {
		name   string
		mutate func(*supervisor.CollectorStatus)
		broker bool
		want   string
	}{
		{"old digest", func(s *supervisor.CollectorStatus) { s.ImageDigest = "sha256:" + strings.Repeat("9", 64) },
			true, `collector "modbus-line3" runs image docker.io/fieldgate/collector-modbus:latest at sha256:999999999999, not at the pinned`},
		{"backoff", func(s *supervisor.CollectorStatus) {
			s.State = supervisor.StateBackoff
			s.LastExit = &supervisor.Exit{Code: 3}
		}, true, `collector "modbus-line3" is backoff (last exit code 3)`},
		{"not connected", func(s *supervisor.CollectorStatus) { s.Report = report(false, 0, start.Add(time.Second)) },
			true, `collector "modbus-line3" is not connected to the broker`},
		{"nothing published", func(s *supervisor.CollectorStatus) { s.Report = report(true, 0, start.Add(time.Second)) },
			true, `collector "modbus-line3" has not published yet`},
		{"report of the previous task", func(s *supervisor.CollectorStatus) { s.Report = report(true, 9, start.Add(-time.Minute)) },
			true, `collector "modbus-line3" has not reported since it started`},
		{"gateway offline", func(*supervisor.CollectorStatus) {}, false, "the gateway is not connected to the broker"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sup := &fakeSupervisor{}
			col := healthyCollector(g, t, start)
			tc.mutate(&col)
			sup.set(col)
			m := newTestMonitor(t, g, SlotB, sup, &fakeBroker{up: tc.broker}, c)
			if err := m.step(context.Background()); err != nil {
				t.Fatal(err)
			}
			if w := m.Status().Trial.Waiting; !strings.Contains(w, tc.want) {
				t.Errorf("waiting = %q, want %q", w, tc.want)
			}
		})
	}
}

func TestMonitorRollsBack(t *testing.T) {
	tests := []struct {
		name  string
		setup func(g *gateway, t *testing.T, sup *fakeSupervisor, c *clock)
		want  string
	}{
		{"crash loop", func(g *gateway, t *testing.T, sup *fakeSupervisor, c *clock) {
			col := healthyCollector(g, t, c.t)
			col.State, col.Restarts, col.LastExit = supervisor.StateCrashLoop, 3, &supervisor.Exit{Code: 1}
			sup.set(col)
		}, `collector "modbus-line3" crash-loops on version 2 (3 restarts, last exit code 1)`},
		{"not healthy in time", func(g *gateway, t *testing.T, sup *fakeSupervisor, c *clock) {
			col := healthyCollector(g, t, c.t)
			col.Report = report(false, 0, c.t.Add(time.Second))
			sup.set(col)
			c.add(time.Minute)
		}, `version 2 was not healthy within 1m0s: collector "modbus-line3" is not connected to the broker`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := onTrial(t, 3)
			c := &clock{t: time.Unix(1764345600, 0)}
			sup := &fakeSupervisor{}
			m := newTestMonitor(t, g, SlotB, sup, &fakeBroker{up: true}, c)
			tc.setup(g, t, sup, c)
			err := m.step(context.Background())
			if !errors.Is(err, ErrSlotChanged) || !strings.Contains(err.Error(), "rolled back to 1: "+tc.want) {
				t.Fatalf("err = %v, want rollback %q", err, tc.want)
			}
			s := g.state(t)
			if s.Current != SlotA || s.Trial != nil || s.Last.Result != "rolled_back" || !strings.HasPrefix(s.Last.Reason, tc.want) {
				t.Errorf("state = %+v %+v", s, s.Last)
			}
			if st := m.Status(); st.State != supervisor.UpdateRolledBack || st.Last.Reason != s.Last.Reason {
				t.Errorf("status = %+v", st)
			}
		})
	}
}

func TestMonitorWaitsForReady(t *testing.T) {
	g := onTrial(t, 3)
	c := &clock{t: time.Unix(1764345600, 0)}
	sup := &fakeSupervisor{}
	ready := make(chan struct{})
	m := newTestMonitor(t, g, SlotB, sup, &fakeBroker{up: true}, c, WithReady(ready))
	c.add(time.Hour) // past the deadline, but not reconciled yet: no verdict
	if err := m.step(context.Background()); err != nil || g.state(t).Trial == nil {
		t.Fatalf("evaluated before ready: %v", err)
	}
	close(ready)
	if err := m.step(context.Background()); !errors.Is(err, ErrSlotChanged) {
		t.Fatalf("after ready: %v", err)
	}
}

func TestMonitorSlotSwitched(t *testing.T) {
	g := newGateway(t)
	g.install(t, makeBundle(t, g.release, bundleSpec{version: "1"}))
	c := &clock{t: time.Now()}
	m := newTestMonitor(t, g, SlotA, &fakeSupervisor{}, &fakeBroker{}, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.step(ctx); err != nil {
		t.Fatal(err)
	}
	if st := m.Status(); st.State != supervisor.UpdateCommitted || st.Current.Version != "1" || st.Last.Reason != "first installation" {
		t.Errorf("status = %+v", st)
	}
	g.install(t, makeBundle(t, g.release, bundleSpec{version: "2"}))
	err := m.step(ctx)
	if !errors.Is(err, ErrSlotChanged) || !strings.Contains(err.Error(), "from a to b: version 2 switched in (slot b) on trial") {
		t.Errorf("err = %v", err)
	}
	// A supervisor that ran from no slot restarts into the first installation.
	g2 := newGateway(t)
	m2 := newTestMonitor(t, g2, "", &fakeSupervisor{}, &fakeBroker{}, c)
	if err := m2.step(ctx); err != nil || m2.Status() != nil {
		t.Fatalf("nothing installed: %v %+v", err, m2.Status())
	}
	g2.install(t, makeBundle(t, g2.release, bundleSpec{version: "1"}))
	if err := m2.step(ctx); !errors.Is(err, ErrSlotChanged) || !strings.Contains(err.Error(), "from none to a") {
		t.Errorf("err = %v", err)
	}
}
