package publish

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"fieldgate/internal/testpeer"
)

// TestOutageBatchesMarkedReplayed: a batch polled while the broker is down
// reaches subscribers after the outage, later than its poll plus one
// interval, so it must carry "replayed": true (issue 5). It used to be handed
// to paho at once, while paho was reconnecting; paho kept it and sent it
// after the outage as it was, unmarked.
func TestOutageBatchesMarkedReplayed(t *testing.T) {
	b := testpeer.StartBroker(t)
	data := testpeer.Subscribe(t, b.Addr, "fieldgate/+/data/#")
	p := start(t, Config{Broker: b.Addr, GatewayID: "gw1", CollectorName: "c", DataDir: t.TempDir(), Interval: 200 * time.Millisecond})
	_ = p.Publish(context.Background(), batch("d", 1))
	testpeer.WaitFor(t, 10*time.Second, "first ack", func() bool { return p.Stats().Published == 1 })
	b.Stop()
	testpeer.WaitFor(t, 10*time.Second, "publisher to see the outage", func() bool { return !p.Stats().Connected })
	const during = 5
	for i := 0; i < during; i++ {
		_ = p.Publish(context.Background(), batch("d", float64(i)))
	}
	time.Sleep(time.Second) // the outage outlasts the interval
	b.Start()
	// QoS 1 allows duplicates: collect until every seq has been seen.
	replayed := map[uint64]bool{}
	deadline := time.After(30 * time.Second)
	for len(replayed) < 1+during {
		var m testpeer.Message
		select {
		case m = <-data:
		case <-deadline:
			t.Fatalf("received seqs %v, want 1..%d", replayed, 1+during)
		}
		var pl struct {
			Seq      uint64 `json:"seq"`
			Replayed bool   `json:"replayed"`
		}
		if err := json.Unmarshal(m.Payload, &pl); err != nil {
			t.Fatal(err)
		}
		replayed[pl.Seq] = replayed[pl.Seq] || pl.Replayed
	}
	if replayed[1] {
		t.Errorf("seq 1, sent live, is marked replayed")
	}
	for s := uint64(2); s <= 1+during; s++ {
		if !replayed[s] {
			t.Errorf("seq %d, polled during the outage and sent after it, lacks \"replayed\": true", s)
		}
	}
}
