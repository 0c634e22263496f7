package publish

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"fieldgate/collectors/queue"
	"fieldgate/internal/testpeer"
)

// TestStatusRepublishedOnQueueLoss: batches the full queue refuses while the
// publisher is connected show in the retained status soon, not only at the
// next reconnect or device change. Found by the fault-injection suite: the
// last rejection after a reconnect never reached the MQTT status.
func TestStatusRepublishedOnQueueLoss(t *testing.T) {
	b := testpeer.StartBroker(t)
	status := testpeer.Subscribe(t, b.Addr, "fieldgate/gw1/status/c")
	// 10 bytes hold no batch: reject_new refuses every one.
	p := start(t, Config{Broker: b.Addr, GatewayID: "gw1", CollectorName: "c", DataDir: t.TempDir(),
		Queue: queue.Config{MaxBytes: 10, Policy: queue.RejectNew}})
	testpeer.WaitFor(t, 10*time.Second, "connected", func() bool { return p.Stats().Connected })
	for i := 0; i < 3; i++ {
		_ = p.Publish(context.Background(), batch("d", float64(i)))
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-status:
			var st Status
			if err := json.Unmarshal(m.Payload, &st); err != nil {
				t.Fatal(err)
			}
			if st.Queue != nil && st.Queue.Rejected == 3 {
				return
			}
		case <-deadline:
			t.Fatalf("no status with rejected 3 within 10s; publisher says %+v", p.Stats())
		}
	}
}
