package publish

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"fieldgate/collectors/queue"
	"fieldgate/internal/testpeer"
)

// runFor runs a publisher until the returned stop is called (a clean stop:
// the queue closes) or the test ends.
func runFor(t *testing.T, cfg Config) (*Publisher, func()) {
	t.Helper()
	p, err := New(cfg, discard())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("Run did not return within 15s of cancel")
		}
	}
	t.Cleanup(stop)
	return p, stop
}

// collect gathers data messages by seq until cond holds.
type collected struct {
	bySeq map[uint64][]byte
}

func (c *collected) add(m testpeer.Message) uint64 {
	var pl struct {
		Seq uint64 `json:"seq"`
	}
	if err := json.Unmarshal(m.Payload, &pl); err != nil {
		return 0
	}
	c.bySeq[pl.Seq] = bytes.TrimPrefix(m.Payload, []byte(`{"replayed":true,`))
	return pl.Seq
}

func (c *collected) until(t *testing.T, ch <-chan testpeer.Message, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for !cond() {
		select {
		case m := <-ch:
			c.add(m)
		case <-deadline:
			t.Fatalf("timed out waiting for %s; have seqs %v", what, c.seqs())
		}
	}
}

func (c *collected) seqs() []uint64 {
	var s []uint64
	for seq := range c.bySeq {
		s = append(s, seq)
	}
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s
}

func (c *collected) has(seqs ...uint64) bool {
	for _, s := range seqs {
		if _, ok := c.bySeq[s]; !ok {
			return false
		}
	}
	return true
}

// readStatusFile reads DATA_DIR/status.json.
func readStatusFile(dir string) (FileStatus, bool) {
	var fs FileStatus
	raw, err := os.ReadFile(filepath.Join(dir, StatusFile))
	return fs, err == nil && json.Unmarshal(raw, &fs) == nil
}

// segmentWith returns the segment file holding the batch of seq, and where
// its payload's `"seq":N,` starts.
func segmentWith(t *testing.T, dataDir string, seq uint64) (string, int) {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(dataDir, "queue", "segments", "*.seg"))
	needle := []byte(fmt.Sprintf(`"seq":%d,`, seq))
	for _, p := range paths {
		b, _ := os.ReadFile(p)
		if i := bytes.Index(b, needle); i >= 0 {
			return p, i
		}
	}
	t.Fatalf("no segment holds seq %d", seq)
	return "", 0
}

// TestQueueDamageWithBroker (issue 8, queue fault tests): the collector's
// publisher restarts on a damaged queue, publishes new data through a real
// mosquitto, and its status counts what was lost.
func TestQueueDamageWithBroker(t *testing.T) {
	tests := []struct {
		name string
		// sent: whether the broker takes the first six batches before the stop
		sent   bool
		damage func(t *testing.T, dir string)
		// received after the restart, and the status counters
		want    []uint64
		corrupt uint64
		clamped uint64
	}{
		{"acknowledged position past the log", true, func(t *testing.T, dir string) {
			// The acked file reached the disk, the log's tail did not.
			path, at := segmentWith(t, dir, 4)
			if err := os.Truncate(path, int64(at-60)); err != nil {
				t.Fatal(err)
			}
		}, []uint64{1, 2, 3, 4, 5, 6, 7, 8}, 1, 1},
		{"flipped byte in a middle record", false, func(t *testing.T, dir string) {
			path, at := segmentWith(t, dir, 3)
			b, _ := os.ReadFile(path)
			b[at+3] ^= 0x04
			os.WriteFile(path, b, 0o600)
		}, []uint64{1, 2, 4, 5, 6, 7, 8}, 1, 0},
		{"truncated tail", false, func(t *testing.T, dir string) {
			path, at := segmentWith(t, dir, 6)
			if err := os.Truncate(path, int64(at)); err != nil {
				t.Fatal(err)
			}
		}, []uint64{1, 2, 3, 4, 5, 7, 8}, 1, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := testpeer.StartBroker(t)
			data := testpeer.Subscribe(t, b.Addr, "fieldgate/gw1/data/#")
			got := &collected{bySeq: map[uint64][]byte{}}
			dir := t.TempDir()
			cfg := Config{Broker: b.Addr, GatewayID: "gw1", CollectorName: "c", DataDir: dir}
			if !tc.sent {
				b.Stop()
			}
			p, stop := runFor(t, cfg)
			for i := 0; i < 6; i++ {
				if err := p.Publish(context.Background(), batch("d", float64(i))); err != nil {
					t.Fatal(err)
				}
			}
			if tc.sent {
				testpeer.WaitFor(t, 10*time.Second, "6 acknowledged", func() bool { return p.Stats().Published == 6 })
			}
			stop()
			tc.damage(t, dir)
			if !tc.sent {
				b.Start()
			}
			p, _ = runFor(t, cfg)
			for i := 0; i < 2; i++ {
				if err := p.Publish(context.Background(), batch("d", float64(10+i))); err != nil {
					t.Fatal(err)
				}
			}
			got.until(t, data, "the new batches", func() bool { return got.has(7, 8) })
			testpeer.WaitFor(t, 10*time.Second, "the queue drained", func() bool { return p.Stats().Pending == 0 })
			time.Sleep(100 * time.Millisecond) // a late duplicate would show as an extra seq
			for {
				select {
				case m := <-data:
					got.add(m)
					continue
				default:
				}
				break
			}
			if fmt.Sprint(got.seqs()) != fmt.Sprint(tc.want) {
				t.Errorf("subscriber got seqs %v, want %v", got.seqs(), tc.want)
			}
			var fs FileStatus
			testpeer.WaitFor(t, 10*time.Second, "status.json counting the damage", func() bool {
				var ok bool
				fs, ok = readStatusFile(dir)
				return ok && fs.Queue != nil && fs.Queue.Corrupt == tc.corrupt && fs.Queue.AckClamped == tc.clamped && fs.State == StateOnline
			})
		})
	}
}

// fill writes a file until the disk is full and returns its path.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !strings.Contains(err.Error(), "no space left") {
				t.Fatalf("filling the disk: %v", err)
			}
			return path
		}
	}
}

// TestDiskFullWithBroker (issue 8, "a full disk"): DATA_DIR on a 256 KiB
// tmpfs filled by something else. With the broker up, batches keep flowing
// from memory, the status says degraded with the reason, and a counter
// moves; with the broker down too, the memory fallback's bound drops the
// oldest batches, counted, and subscribers see exactly that gap; when space
// returns the collector is online again, without a restart.
func TestDiskFullWithBroker(t *testing.T) {
	disk := testpeer.Tmpfs(t, "256k")
	b := testpeer.StartBroker(t)
	data := testpeer.Subscribe(t, b.Addr, "fieldgate/gw1/data/#")
	status := testpeer.Subscribe(t, b.Addr, "fieldgate/gw1/status/c")
	got := &collected{bySeq: map[uint64][]byte{}}
	dir := filepath.Join(disk, "data")
	cfg := Config{Broker: b.Addr, GatewayID: "gw1", CollectorName: "c", DataDir: dir,
		Queue: queue.Config{MemoryBytes: 8 << 10}}
	p, stop := runFor(t, cfg)
	publish := func(n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			if err := p.Publish(context.Background(), batch("d", float64(i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(3)
	got.until(t, data, "the first batches", func() bool { return got.has(1, 2, 3) })
	testpeer.WaitFor(t, 10*time.Second, "status.json", func() bool { _, ok := readStatusFile(dir); return ok })

	filler := fill(t, disk)
	// The segment's last page may still take a few batches.
	for p.Stats().AppendFailed == 0 {
		if p.queue.LastSeq() > 200 {
			t.Fatalf("the full disk never refused an append: %+v", p.Stats())
		}
		publish(1)
	}
	publish(2)
	failedFrom, last := p.queue.LastSeq()-2, p.queue.LastSeq()
	got.until(t, data, "batches sent from memory", func() bool { return got.has(failedFrom, last) })
	if st := p.Stats(); !strings.Contains(st.Degraded, "no space left on device") {
		t.Fatalf("stats %+v: want degraded with the reason", st)
	}
	waitStatus(t, status, "degraded with the reason", func(s Status) bool {
		return s.State == StateDegraded && strings.Contains(s.Degraded, "no space left on device") && s.Queue.AppendFailed > 0
	})
	testpeer.WaitFor(t, 10*time.Second, "status.json saying degraded on the full disk", func() bool {
		fs, ok := readStatusFile(dir)
		return ok && fs.State == StateDegraded && strings.Contains(fs.Degraded, "no space left")
	})

	// The broker goes away as well: 8 KiB of memory holds a few batches.
	b.Stop()
	testpeer.WaitFor(t, 10*time.Second, "the publisher to see the outage", func() bool { return !p.Stats().Connected })
	publish(60)
	dropped := p.Stats().Dropped
	if dropped == 0 {
		t.Fatalf("stats %+v: the memory fallback never dropped", p.Stats())
	}
	os.Remove(filler)
	b.Start()
	publish(1) // space is back: appends reach the disk again
	last = p.queue.LastSeq()
	got.until(t, data, "the last batch", func() bool { return got.has(last) })
	testpeer.WaitFor(t, 10*time.Second, "the queue drained", func() bool { return p.Stats().Pending == 0 })
	waitStatus(t, status, "online again", func(s Status) bool { return s.State == StateOnline && s.Degraded == "" })
	var missing []uint64
	for s := uint64(1); s <= last; s++ {
		if !got.has(s) {
			missing = append(missing, s)
		}
	}
	if uint64(len(missing)) != dropped {
		t.Errorf("missing seqs %v (%d), but %d counted dropped", missing, len(missing), dropped)
	}
	stop()
	if fs, ok := readStatusFile(dir); !ok || fs.State != "offline" || fs.Queue.Dropped != dropped {
		t.Errorf("status.json after the stop: %+v", fs)
	}
}

func waitStatus(t *testing.T, ch <-chan testpeer.Message, what string, cond func(Status) bool) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case m := <-ch:
			var s Status
			if json.Unmarshal(m.Payload, &s) == nil && s.Queue != nil && cond(s) {
				return
			}
		case <-deadline:
			t.Fatalf("no collector status %s within 30s", what)
		}
	}
}
