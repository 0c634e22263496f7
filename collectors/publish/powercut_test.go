package publish

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"fieldgate/collectors/queue"
	"fieldgate/internal/testpeer"
)

// TestPowerCutProcess (issue 8, "power cut"): a process publishing to a
// real mosquitto is SIGKILLed, then its queue files are cut at random points
// past their last fsynced size (which its queue's SyncObserver wrote down)
// with random bytes flipped in the unsynced part, and it is started again
// under a new boot id — several times over. A subscriber records every
// batch: no seq may arrive with two different contents, and every seq it
// never got must lie in a range a restarted collector reported as possibly
// lost ("resumed" in its status).
func TestPowerCutProcess(t *testing.T) {
	if os.Getenv("FG_POWERCUT_CHILD") != "" {
		powerCutChild(t)
		return
	}
	b := testpeer.StartBroker(t)
	data := testpeer.Subscribe(t, b.Addr, "fieldgate/gw1/data/#")
	dir := t.TempDir()
	observed := filepath.Join(t.TempDir(), "synced")
	rnd := rand.New(rand.NewSource(time.Now().UnixNano()))
	seed := rnd.Int63()
	rnd = rand.New(rand.NewSource(seed))
	t.Logf("seed %d", seed)

	got := map[uint64]string{}
	var twice []string
	take := func(m testpeer.Message) {
		var c collected
		c.bySeq = map[uint64][]byte{}
		seq := c.add(m)
		body := string(c.bySeq[seq])
		if prev, ok := got[seq]; ok && prev != body {
			twice = append(twice, fmt.Sprintf("seq %d: %s then %s", seq, prev, body))
		}
		got[seq] = body
	}
	var lostRanges [][2]uint64
	const rounds = 4
	for round := 0; round <= rounds; round++ {
		child := startPowerCutChild(t, b.Addr, dir, observed, fmt.Sprintf("boot-%d", round))
		startedAt := time.Now()
		// After a cut the new run reports what may be lost.
		if round > 0 {
			testpeer.WaitFor(t, 20*time.Second, "the restarted collector's status", func() bool {
				fs, ok := readStatusFile(dir)
				return ok && fs.TS >= startedAt.UnixMilli() && fs.State != "offline"
			})
			fs, _ := readStatusFile(dir)
			if fs.Resumed == nil || !strings.Contains(fs.Resumed.Reason, "unclean stop") {
				t.Fatalf("round %d: status after a power cut has no resumed: %+v", round, fs.Status)
			}
			if fs.Resumed.LostTo > 0 {
				lostRanges = append(lostRanges, [2]uint64{fs.Resumed.LostFrom, fs.Resumed.LostTo})
			}
			t.Logf("round %d: resumed %+v", round, *fs.Resumed)
		}
		before := len(got)
		deadline := time.After(30 * time.Second)
		for len(got) < before+100 || syncLines(observed) < 3 {
			select {
			case m := <-data:
				take(m)
			case <-deadline:
				t.Fatalf("round %d: %d batches received, %d syncs seen", round, len(got)-before, syncLines(observed))
			}
		}
		if round == rounds {
			// The last run stops cleanly and its backlog arrives.
			child.Cmd.Process.Signal(syscall.SIGTERM)
			<-child.Exited()
			if err := child.Err(); err != nil {
				t.Fatalf("last run: %v", err)
			}
			break
		}
		child.Kill()
		cuts := powerCut(t, rnd, dir, observed)
		t.Logf("round %d: killed after %d batches; %s", round, len(got)-before, strings.Join(cuts, "; "))
		os.Remove(observed)
	}
	// Drain what the broker still delivers.
	for idle := time.After(time.Second); ; {
		select {
		case m := <-data:
			take(m)
			continue
		case <-idle:
		}
		break
	}
	for _, s := range twice {
		t.Errorf("a seq arrived with two contents: %s", s)
	}
	var last uint64
	for seq := range got {
		last = max(last, seq)
	}
	var unreported []uint64
	for seq := uint64(1); seq <= last; seq++ {
		if _, ok := got[seq]; ok {
			continue
		}
		in := false
		for _, r := range lostRanges {
			in = in || (seq >= r[0] && seq <= r[1])
		}
		if !in {
			unreported = append(unreported, seq)
		}
	}
	if len(unreported) > 0 {
		t.Errorf("seqs never received and never reported lost: %v (reported %v)", unreported, lostRanges)
	}
	t.Logf("%d batches received, up to seq %d; reported possibly lost: %v", len(got), last, lostRanges)
}

func startPowerCutChild(t *testing.T, broker, dir, observed, boot string) *testpeer.Process {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestPowerCutProcess$", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), "FG_POWERCUT_CHILD=1", "FG_BROKER="+broker, "FG_DATA="+dir,
		"FG_OBSERVED="+observed, "FG_BOOT="+boot)
	return testpeer.StartCmd(t, "publishing child "+boot, cmd)
}

// powerCutChild publishes a batch every 2 ms until SIGTERM (or SIGKILL),
// writing down every fsync its queue makes.
func powerCutChild(t *testing.T) {
	obs, err := os.OpenFile(os.Getenv("FG_OBSERVED"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Broker: os.Getenv("FG_BROKER"), GatewayID: "gw1", CollectorName: "c", DataDir: os.Getenv("FG_DATA"),
		Queue: queue.Config{Sync: 50 * time.Millisecond, BootID: os.Getenv("FG_BOOT"),
			SyncObserver: func(path string, size int64) { fmt.Fprintf(obs, "%s %d\n", path, size) }}}
	p, err := New(cfg, discard())
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	rnd := rand.New(rand.NewSource(time.Now().UnixNano()))
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			return
		case <-tick.C:
			_ = p.Publish(ctx, batch("d", rnd.Float64()))
		}
	}
}

func syncLines(path string) int {
	b, _ := os.ReadFile(path)
	return bytes.Count(b, []byte("\n"))
}

// powerCut cuts every segment of the collector's queue somewhere past its
// last fsynced size and flips bytes in the unsynced part; a segment never
// synced may vanish. It returns what it did.
func powerCut(t *testing.T, rnd *rand.Rand, dir, observed string) []string {
	t.Helper()
	synced := map[string]int64{}
	f, err := os.Open(observed)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		i := strings.LastIndexByte(sc.Text(), ' ')
		if i < 0 {
			continue
		}
		n, _ := strconv.ParseInt(sc.Text()[i+1:], 10, 64)
		synced[sc.Text()[:i]] = n
	}
	f.Close()
	var did []string
	paths, _ := filepath.Glob(filepath.Join(dir, "queue", "segments", "*.seg"))
	for _, p := range paths {
		name := filepath.Base(p)
		dur, ok := synced[p]
		if !ok && rnd.Intn(2) == 0 {
			os.Remove(p)
			did = append(did, name+" never synced: gone")
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil || int64(len(b)) <= dur {
			continue
		}
		end := dur + rnd.Int63n(int64(len(b))-dur+1)
		flips := 0
		if end > dur {
			flips = rnd.Intn(3)
		}
		for i := 0; i < flips; i++ {
			b[dur+rnd.Int63n(end-dur)] ^= byte(1 + rnd.Intn(255))
		}
		if err := os.WriteFile(p, b[:end], 0o600); err != nil {
			t.Fatal(err)
		}
		did = append(did, fmt.Sprintf("%s synced %d written %d cut at %d, %d flips", name, dur, len(b), end, flips))
	}
	return did
}
