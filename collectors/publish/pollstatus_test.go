package publish

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"fieldgate/internal/testpeer"
)

// TestStatusCarriesPoll: the engine's schedule figures are in the status
// file and the retained status, and new overruns republish the latter.
func TestStatusCarriesPoll(t *testing.T) {
	defer func(d time.Duration) { pollCountsEvery = d }(pollCountsEvery)
	pollCountsEvery = 100 * time.Millisecond
	b := testpeer.StartBroker(t)
	status := testpeer.Subscribe(t, b.Addr, "fieldgate/gw1/status/c")
	dir := t.TempDir()
	var overruns atomic.Uint64
	p := start(t, Config{Broker: b.Addr, GatewayID: "gw1", CollectorName: "c", DataDir: dir})
	p.ReportPolling(func() PollStatus {
		return PollStatus{Cycles: 40, Overruns: overruns.Load(), Skipped: 7, LateP99Ms: 1.5}
	})
	wantOverruns := func(n uint64) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case m := <-status:
				var st Status
				if err := json.Unmarshal(m.Payload, &st); err != nil {
					t.Fatal(err)
				}
				if st.Poll != nil && st.Poll.Overruns == n && st.Poll.Cycles == 40 && st.Poll.Skipped == 7 && st.Poll.LateP99Ms == 1.5 {
					return
				}
			case <-deadline:
				t.Fatalf("no retained status with poll overruns %d within 10s", n)
			}
		}
	}
	wantOverruns(0)
	overruns.Store(3)
	wantOverruns(3)
	testpeer.WaitFor(t, 10*time.Second, "status.json with the poll figures", func() bool {
		raw, err := os.ReadFile(filepath.Join(dir, StatusFile))
		var fs FileStatus
		return err == nil && json.Unmarshal(raw, &fs) == nil && fs.Poll != nil && fs.Poll.Overruns == 3
	})
}
