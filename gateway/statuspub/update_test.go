package statuspub

import (
	"testing"
	"time"

	"fieldgate/gateway/supervisor"
	"fieldgate/internal/testpeer"
)

// TestGatewayStatusUpdate: the firmware update state rides in the retained
// gateway status, and the publisher reports its own broker connection.
func TestGatewayStatusUpdate(t *testing.T) {
	testpeer.Require(t, "mosquitto")
	broker := testpeer.Mosquitto(t)
	src := &fakeSource{changed: make(chan struct{}, 1)}
	p, err := New(Config{Broker: broker, GatewayID: "gw1", MinInterval: time.Millisecond}, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Connected() {
		t.Error("connected before Run")
	}
	msgs := testpeer.Subscribe(t, broker, p.Topic())
	ctx := t.Context()
	go p.Run(ctx)
	testpeer.WaitFor(t, 15*time.Second, "publisher connected", p.Connected)
	src.set(supervisor.Status{Update: &supervisor.UpdateStatus{State: supervisor.UpdateRolledBack,
		Current: &supervisor.SlotVersion{Slot: "a", Version: "1"},
		Last:    &supervisor.UpdateResult{Result: "rolled_back", Version: "2", From: "1", Reason: "crash loop"}}})
	for {
		_, pl := next(t, msgs)
		if pl.Update == nil {
			continue // the first message may predate the update state
		}
		if pl.Update.State != "rolled_back" || pl.Update.Last.Reason != "crash loop" || pl.Update.Current.Version != "1" {
			t.Errorf("update in the gateway status = %+v", pl.Update)
		}
		return
	}
}
