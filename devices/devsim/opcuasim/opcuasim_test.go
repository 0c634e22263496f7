package opcuasim

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestNewErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Devices: []Device{{Name: "a", Profile: "no-such-profile"}}}, "no-such-profile"},
		{Config{Devices: []Device{{Name: "a", Profile: "eastron-sdm120"}, {Name: "a", Profile: "eastron-sdm120"}}}, "duplicate device"},
		{Config{Interval: time.Millisecond}, "below 10ms"},
		{Config{Vars: -1}, "negative"},
		{Config{Port: 70000}, "invalid port"},
		{Config{Advertise: []string{"a:1"}}, `invalid advertised host "a:1"`},
	} {
		if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want an error containing %q", tc.cfg, err, tc.want)
		}
	}
}

// TestServe reads a profile tag and a bulk variable with gopcua's client
// and sees the bulk value change.
func TestServe(t *testing.T) {
	port := freePort(t)
	sim, err := New(Config{Port: port, Vars: 3, Interval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if ids := sim.NodeIDs(); len(ids) < 4 || !strings.HasPrefix(ids[0], "ns=1;s=meter1.") || ids[len(ids)-1] != "ns=1;s=Bulk.2" {
		t.Fatalf("NodeIDs = %v", ids)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sim.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	var c *opcua.Client
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err = opcua.NewClient("opc.tcp://127.0.0.1:"+strconv.Itoa(port), opcua.SecurityMode(ua.MessageSecurityModeNone), opcua.AutoReconnect(false))
		if err != nil {
			t.Fatal(err)
		}
		if err = c.Connect(ctx); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("connect: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // the listener is not up yet
	}
	defer c.Close(ctx)
	read := func(id string) any {
		t.Helper()
		res, err := c.Read(ctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{NodeID: ua.MustParseNodeID(id)}}})
		if err != nil || len(res.Results) != 1 || res.Results[0].Value == nil {
			t.Fatalf("read %s: %v %+v", id, err, res)
		}
		return res.Results[0].Value.Value()
	}
	if v, ok := read("ns=1;s=meter1.voltage_l1").(float32); !ok || v <= 0 {
		t.Errorf("meter1.voltage_l1 = %T %v, want a positive float32", v, v)
	}
	// A scaled register is served as a Double engineering value, not
	// rounded to its integer register type.
	if v, ok := read("ns=1;s=drive1.motor_current").(float64); !ok || v < 1.5 || v > 11.8 {
		t.Errorf("drive1.motor_current = %T %v, want a float64 within 1.5..11.8", v, v)
	}
	first := read("ns=1;s=Bulk.2").(float64)
	deadline = time.Now().Add(10 * time.Second)
	for read("ns=1;s=Bulk.2").(float64) == first {
		if time.Now().After(deadline) {
			t.Fatal("Bulk.2 did not change")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAdvertise: listening on every address, the server offers its
// endpoints to clients using an advertised name (a container's service
// name) and to none other — gopcua's server matches the URL exactly.
func TestAdvertise(t *testing.T) {
	port := freePort(t)
	sim, err := New(Config{Host: "0.0.0.0", Port: port, Advertise: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sim.Run(ctx) }()
	defer func() { cancel(); <-done }()
	url := "opc.tcp://localhost:" + strconv.Itoa(port)
	var eps []*ua.EndpointDescription
	deadline := time.Now().Add(10 * time.Second)
	for {
		if eps, err = opcua.GetEndpoints(ctx, url); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GetEndpoints(%s): %v", url, err)
		}
		time.Sleep(50 * time.Millisecond) // the listener is not up yet
	}
	if len(eps) != 1 || eps[0].EndpointURL != url {
		t.Errorf("endpoints for %s: %+v", url, eps)
	}
	other, err := opcua.GetEndpoints(ctx, "opc.tcp://127.0.0.1:"+strconv.Itoa(port))
	if err != nil || len(other) != 0 {
		t.Errorf("endpoints for an unadvertised name: %v, %v; want none", other, err)
	}
}

// blockedNotifier blocks every ChangeNotification until release is closed,
// as gopcua's server does when a subscription's channel is full and its
// goroutine is stuck sending to a client that does not read.
type blockedNotifier struct {
	called  chan struct{}
	release chan struct{}
}

func (b *blockedNotifier) ChangeNotification(*ua.NodeID) {
	select {
	case b.called <- struct{}{}:
	default:
	}
	<-b.release
}

// TestStopWhileServerBlocks: Run returns once its context is done even when
// a value update is stuck in the server.
func TestStopWhileServerBlocks(t *testing.T) {
	sim, err := New(Config{Port: freePort(t), Vars: 3, Interval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	blocked := &blockedNotifier{called: make(chan struct{}, 1), release: make(chan struct{})}
	defer close(blocked.release)
	sim.notify = blocked
	sim.stopTimeout = 100 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sim.Run(ctx) }()
	select {
	case <-blocked.called:
	case err := <-done:
		t.Fatalf("Run ended before any update: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no value update within 30 s")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its context ended while an update was blocked in the server")
	}
}
