package statuspub

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"fieldgate/gateway/supervisor"
	"fieldgate/internal/testpeer"
)

type fakeSource struct {
	mu      sync.Mutex
	st      supervisor.Status
	changed chan struct{}
}

func (f *fakeSource) Status() supervisor.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

func (f *fakeSource) Changed() <-chan struct{} { return f.changed }

func (f *fakeSource) set(st supervisor.Status) {
	f.mu.Lock()
	f.st = st
	f.mu.Unlock()
	f.changed <- struct{}{}
}

func next(t *testing.T, ch <-chan testpeer.Message) (testpeer.Message, Payload) {
	t.Helper()
	select {
	case m := <-ch:
		var p Payload
		if err := json.Unmarshal(m.Payload, &p); err != nil {
			t.Fatalf("payload %q: %v", m.Payload, err)
		}
		return m, p
	case <-time.After(15 * time.Second):
		t.Fatal("no status message")
	}
	panic("unreachable")
}

func TestGatewayStatus(t *testing.T) {
	testpeer.Require(t, "mosquitto")
	broker := testpeer.Mosquitto(t)
	src := &fakeSource{changed: make(chan struct{}, 1), st: supervisor.Status{Collectors: []supervisor.CollectorStatus{
		{Name: "modbus-line3", State: supervisor.StateRunning, Restarts: 2, ImageDigest: "sha256:aa", ConfiguredDigest: "sha256:bb"},
	}}}
	p, err := New(Config{Broker: broker, GatewayID: "gw1", Version: "v9", MinInterval: time.Millisecond}, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Topic() != "fieldgate/gw1/status" {
		t.Errorf("topic = %q", p.Topic())
	}
	msgs := testpeer.Subscribe(t, broker, "fieldgate/gw1/status")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()

	m, pl := next(t, msgs)
	if pl.State != "online" || pl.Version != "v9" || pl.TS == 0 {
		t.Errorf("status = %s", m.Payload)
	}
	if c := pl.Collectors["modbus-line3"]; c.State != "running" || c.Restarts != 2 || c.ImageDigest != "sha256:aa" ||
		c.ConfiguredDigest != "sha256:bb" || c.DigestMatches {
		t.Errorf("collectors = %s", m.Payload)
	}
	src.set(supervisor.Status{Collectors: []supervisor.CollectorStatus{{Name: "modbus-line3", State: supervisor.StateCrashLoop, Restarts: 5}}})
	for {
		_, pl = next(t, msgs)
		if pl.Collectors["modbus-line3"].State == supervisor.StateCrashLoop {
			break
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for {
		_, pl = next(t, msgs)
		if pl.State == "offline" {
			break
		}
	}
	// Retained: a new subscriber sees the last status.
	late := testpeer.Subscribe(t, broker, "fieldgate/gw1/status")
	m, pl = next(t, late)
	if !m.Retained || pl.State != "offline" {
		t.Errorf("retained = %v %s", m.Retained, m.Payload)
	}
}

func TestNewValidates(t *testing.T) {
	src := &fakeSource{changed: make(chan struct{})}
	if _, err := New(Config{Broker: "http://x", GatewayID: "g"}, src, nil); err == nil {
		t.Error("bad broker accepted")
	}
	if _, err := New(Config{Broker: "x", GatewayID: ""}, src, nil); err == nil {
		t.Error("empty gateway accepted")
	}
}
