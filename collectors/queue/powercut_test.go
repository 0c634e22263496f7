package queue

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// The crash-consistency tests (issue 8, "power cut"). This kernel has no
// device-mapper, so the cut is simulated at file level: a script drives a
// queue (appends, sends, acknowledgements, syncs, a disk that refuses
// writes), the queue is abandoned like kill -9, and for a power cut every
// file is put back to something the disk could hold — cut anywhere past
// its last fsynced size with random bytes flipped in the unsynced part, a
// state-file slot written since its last fsync old, new or torn, a segment
// deleted since the directory sync back again — guided by the queue's
// SyncObserver, not by timing. The queue is then reopened under a new boot
// id and checked: it opens, never sends a seq already sent with other
// content, never numbers past a seq it already sent, and every batch it no
// longer holds lies in the range its Resumed names.

// cutHarness runs one script.
type cutHarness struct {
	t     testing.TB
	rnd   *rand.Rand
	dir   string
	cfg   Config
	q     *Queue
	boots int
	round int

	appended  map[uint64]string // content of every seq accepted, latest
	sent      map[uint64]string // content of every seq handed out by Next
	acked     map[uint64]bool
	pending   map[uint64]bool // accepted, neither acknowledged nor written off
	maxSent   uint64
	failing   bool              // the disk refuses writes (this round)
	everFail  bool              // since the last reopen
	durable   map[string][]byte // content known durable: segments, state files
	durNames  map[string]bool   // segment names known durable in their directory
	resR      []uint64          // reservations made durable, in order
	lastCuts  []string          // what the last power cut did, for failures
	scriptLog []string
}

func newCutHarness(t testing.TB, dir string, seed int64, always bool) *cutHarness {
	h := &cutHarness{
		t: t, rnd: rand.New(rand.NewSource(seed)), dir: dir,
		appended: map[uint64]string{}, sent: map[uint64]string{}, acked: map[uint64]bool{},
		pending: map[uint64]bool{}, durable: map[string][]byte{}, durNames: map[string]bool{},
	}
	h.cfg = Config{
		Dir:           filepath.Join(h.dir, "queue"),
		LegacySeqFile: filepath.Join(h.dir, "seq"),
		SegmentBytes:  int64(256 + h.rnd.Intn(2048)),
		MemoryBytes:   1 << 20,
		MaxBytes:      1 << 30,
		Sync:          time.Hour, // syncs come from the script
		LiveAge:       time.Duration(h.rnd.Intn(2)) * time.Hour,
		SyncObserver:  h.observe,
	}
	if always {
		h.cfg.Sync = SyncAlways
	}
	h.open(true)
	return h
}

func (h *cutHarness) logf(format string, args ...any) {
	h.scriptLog = append(h.scriptLog, fmt.Sprintf(format, args...))
}

func (h *cutHarness) fatalf(format string, args ...any) {
	h.t.Helper()
	h.t.Fatalf("%s\nscript:\n  %s\nlast cut:\n  %s", fmt.Sprintf(format, args...),
		strings.Join(h.scriptLog, "\n  "), strings.Join(h.lastCuts, "\n  "))
}

// open reopens the queue; a power cut (newBoot) comes back under a new boot id.
func (h *cutHarness) open(newBoot bool) {
	h.t.Helper()
	if newBoot || h.boots == 0 {
		h.boots++
	}
	cfg := h.cfg
	cfg.BootID = fmt.Sprintf("boot-%d", h.boots)
	q, err := Open(cfg, discard())
	if err != nil {
		h.fatalf("open after round %d: %v", h.round, err)
	}
	h.q = q
	h.failing, h.everFail = false, false
}

// observe records what an fsync made durable.
func (h *cutHarness) observe(path string, size int64) {
	switch {
	case path == filepath.Join(h.cfg.Dir, segmentsDir):
		h.durNames = map[string]bool{}
		for _, p := range segments(h.t, h.cfg.Dir) {
			h.durNames[filepath.Base(p)] = true
		}
	default:
		b, err := os.ReadFile(path)
		if err != nil {
			h.t.Fatalf("observer: %v", err)
		}
		if int64(len(b)) > size {
			b = b[:size]
		}
		h.durable[path] = b
		if filepath.Base(path) == "reservation" {
			s := &slotFile{size: resSlotSize, magic: "FGQR"}
			var newest []byte
			var gen uint64
			for i := 0; i+resSlotSize <= len(b); i += resSlotSize {
				if p, g, ok := s.parse(b[i : i+resSlotSize]); ok && (newest == nil || g > gen) {
					newest, gen = p, g
				}
			}
			if newest != nil {
				h.resR = append(h.resR, decodeRes(newest).reserved)
			}
		}
	}
}

func (h *cutHarness) append(n int) {
	for i := 0; i < n; i++ {
		seq := h.q.LastSeq() + 1
		if _, ok := h.sent[seq]; ok {
			h.fatalf("round %d: numbering reuses seq %d, which was sent with %q", h.round, seq, h.sent[seq])
		}
		content := fmt.Sprintf(`{"seq":%d,"round":%d,"r":%d,"pad":%q}`, seq, h.round, h.rnd.Int63(), strings.Repeat("x", h.rnd.Intn(300)))
		ts := time.Now().Add(-time.Duration(h.rnd.Intn(2)) * time.Hour)
		if err := h.q.Append(Record{Seq: seq, TS: ts, Topic: "t", Payload: []byte(content)}); err != nil {
			h.fatalf("append %d: %v", seq, err)
		}
		h.appended[seq] = content
		h.pending[seq] = true
	}
	h.logf("append %d (last %d)", n, h.q.LastSeq())
}

// send takes the next record as the broker would receive it.
func (h *cutHarness) send() (uint64, bool) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // never wait: take what is ready
	r, ok := h.q.Next(ctx)
	if !ok {
		return 0, false
	}
	content := string(r.Payload)
	if want, ok := h.appended[r.Seq]; !ok || want != content {
		h.fatalf("round %d: seq %d sent with %q, appended as %q", h.round, r.Seq, content, want)
	}
	if prev, ok := h.sent[r.Seq]; ok && prev != content {
		h.fatalf("round %d: seq %d sent again with other content: %q, before %q", h.round, r.Seq, content, prev)
	}
	h.sent[r.Seq] = content
	h.maxSent = max(h.maxSent, r.Seq)
	return r.Seq, true
}

func (h *cutHarness) ack(seq uint64) {
	h.q.Ack(seq)
	h.acked[seq] = true
	delete(h.pending, seq)
}

// run interprets the script.
func (h *cutHarness) run(script []byte) {
	var inflight []uint64
	for i, op := range script {
		h.round = i
		switch op % 10 {
		case 0, 1, 2:
			h.append(1 + int(op/10)%6)
		case 3, 4:
			for n := 1 + int(op/10)%4; n > 0; n-- {
				if seq, ok := h.send(); ok {
					inflight = append(inflight, seq)
				}
			}
			h.logf("send (in flight %v)", inflight)
		case 5:
			// PUBACKs, in order, for some of the window; a failed publish
			// goes back to be resent.
			n := min(len(inflight), int(op/10)%5+1)
			for _, seq := range inflight[:n] {
				if op&1 == 0 || h.acked[seq] {
					h.ack(seq)
				} else {
					h.q.Resend(seq)
				}
			}
			h.logf("ack/resend %v", inflight[:n])
			inflight = inflight[n:]
		case 6:
			if err := h.q.Sync(); err != nil && !h.failing {
				h.fatalf("sync: %v", err)
			}
			h.logf("sync")
		case 7:
			h.failing = !h.failing
			h.everFail = h.everFail || h.failing
			h.q.mu.Lock()
			h.q.failWrites = h.failing
			h.q.mu.Unlock()
			h.logf("disk failing: %v", h.failing)
		case 8:
			inflight = nil
			switch op / 10 % 3 {
			case 0:
				h.cleanStop()
			case 1:
				h.crash()
			default:
				h.powerCut()
			}
		case 9:
			inflight = nil
			h.powerCut()
		}
	}
	h.powerCut()
	// The end: everything that survived is sent, unchanged.
	for {
		seq, ok := h.send()
		if !ok {
			break
		}
		h.ack(seq)
	}
	for seq := range h.pending {
		h.fatalf("seq %d accepted, neither sent nor reported lost", seq)
	}
	h.q.Close()
}

func (h *cutHarness) cleanStop() {
	h.q.mu.Lock()
	h.q.failWrites = false
	h.q.mu.Unlock()
	last := h.q.LastSeq()
	if err := h.q.Close(); err != nil {
		h.fatalf("close: %v", err)
	}
	h.logf("clean stop at %d", last)
	h.open(false)
	if h.q.LastSeq() != last || h.q.Stats().Resumed != nil {
		h.fatalf("after a clean stop at %d: last seq %d, resumed %+v", last, h.q.LastSeq(), h.q.Stats().Resumed)
	}
	h.check()
}

func (h *cutHarness) crash() {
	last := h.q.LastSeq()
	h.q.abandon()
	h.logf("crash at %d", last)
	everFail := h.everFail
	h.open(false)
	if !everFail && (h.q.LastSeq() != last || h.q.Stats().Resumed != nil) {
		h.fatalf("after a crash at %d in the same boot: last seq %d, resumed %+v", last, h.q.LastSeq(), h.q.Stats().Resumed)
	}
	h.check()
}

// powerCut abandons the queue and leaves on disk what a power cut could.
func (h *cutHarness) powerCut() {
	last := h.q.LastSeq()
	h.q.mu.Lock()
	resGen := h.q.res.gen
	h.q.mu.Unlock()
	h.q.abandon()
	h.lastCuts = nil
	cut := func(format string, args ...any) { h.lastCuts = append(h.lastCuts, fmt.Sprintf(format, args...)) }

	// Segments: append-only files.
	now := map[string]bool{}
	for _, p := range segments(h.t, h.cfg.Dir) {
		name := filepath.Base(p)
		now[name] = true
		dur, synced := h.durable[p]
		if !h.durNames[name] && !synced && h.rnd.Intn(2) == 0 {
			os.Remove(p)
			cut("%s: created since the directory sync, gone", name)
			continue
		}
		b, _ := os.ReadFile(p)
		if len(b) <= len(dur) {
			continue
		}
		end := len(dur) + h.rnd.Intn(len(b)-len(dur)+1)
		flips := 0
		if end > len(dur) {
			flips = h.rnd.Intn(3)
		}
		for i := 0; i < flips; i++ {
			b[len(dur)+h.rnd.Intn(end-len(dur))] ^= byte(1 + h.rnd.Intn(255))
		}
		os.WriteFile(p, b[:end], 0o600)
		cut("%s: durable %d, written %d, cut at %d, %d flips", name, len(dur), len(b), end, flips)
	}
	for name := range h.durNames {
		p := filepath.Join(h.cfg.Dir, segmentsDir, name)
		if dur, ok := h.durable[p]; ok && !now[name] && h.rnd.Intn(2) == 0 {
			os.WriteFile(p, dur, 0o600)
			cut("%s: deleted since the directory sync, back with %d bytes", name, len(dur))
		}
	}
	// The acknowledged position: each slot old, new or torn.
	ackPath := filepath.Join(h.cfg.Dir, "ack")
	if cur, err := os.ReadFile(ackPath); err == nil {
		old := h.durable[ackPath]
		for slot := 0; slot < 2; slot++ {
			lo, hi := slot*ackSlotSize, (slot+1)*ackSlotSize
			switch c := h.rnd.Intn(3); {
			case c == 0 && len(old) >= hi:
				copy(cur[lo:hi], old[lo:hi])
				cut("ack slot %d: old", slot)
			case c == 1 && len(old) >= hi:
				at := lo + h.rnd.Intn(ackSlotSize)
				copy(cur[at:hi], old[at:hi])
				cut("ack slot %d: torn at %d", slot, at-lo)
			default:
				cut("ack slot %d: new", slot)
			}
		}
		os.WriteFile(ackPath, cur, 0o600)
	}
	// The reservation is fsynced at every write; the cut may still have come
	// during the last write, before its fsync returned — if no seq under it
	// was accepted yet (an append waits for the reservation covering it).
	if n := len(h.resR); n >= 2 && h.maxAccepted() <= h.resR[n-2] && h.rnd.Intn(3) == 0 {
		resPath := filepath.Join(h.cfg.Dir, "reservation")
		b, _ := os.ReadFile(resPath)
		slot := int(resGen % 2)
		for i := 0; i < 4; i++ {
			b[slot*resSlotSize+h.rnd.Intn(resSlotSize)] ^= 0xA5
		}
		os.WriteFile(resPath, b, 0o600)
		h.resR = h.resR[:n-1]
		cut("reservation slot %d torn (its write never completed)", slot)
	}
	h.logf("power cut at %d", last)
	everFail := h.everFail
	h.open(true)
	if h.cfg.Sync == SyncAlways && !everFail && h.q.LastSeq() != last {
		h.fatalf("QUEUE_SYNC=always: numbering resumes at %d after a cut at %d, want no gap (resumed %+v)", h.q.LastSeq()+1, last, h.q.Stats().Resumed)
	}
	h.check()
}

func (h *cutHarness) maxAccepted() uint64 {
	var m uint64
	for seq := range h.appended {
		m = max(m, seq)
	}
	return m
}

// check runs after every reopen: numbering is past every seq sent, and what
// the queue no longer holds lies in the reported range.
func (h *cutHarness) check() {
	h.t.Helper()
	q := h.q
	if q.LastSeq() < h.maxSent {
		h.fatalf("reopened: numbering resumes at %d, but seq %d was sent", q.LastSeq()+1, h.maxSent)
	}
	st := q.Stats()
	if st.Dropped != 0 || st.Rejected != 0 {
		h.fatalf("reopened: dropped %d rejected %d, none expected", st.Dropped, st.Rejected)
	}
	held := map[uint64]bool{}
	q.mu.Lock()
	for _, m := range q.recs {
		if !m.left {
			held[m.seq] = true
		}
	}
	q.mu.Unlock()
	var lost []uint64
	for seq := range h.pending {
		if !held[seq] {
			lost = append(lost, seq)
		}
	}
	sort.Slice(lost, func(i, j int) bool { return lost[i] < lost[j] })
	for _, seq := range lost {
		r := st.Resumed
		if r == nil || seq <= r.AfterSeq || seq >= r.NextSeq {
			h.fatalf("seq %d lost, outside the reported range (resumed %+v, stats %+v); lost %v", seq, r, st, lost)
		}
		delete(h.pending, seq)
	}
	h.logf("reopened: next %d, lost %v, resumed %+v, corrupt %d", q.LastSeq()+1, lost, st.Resumed, st.Corrupt)
}

// simulate turns real fsyncs off for the test: the cuts are simulated, and
// real fsyncs would only cost time.
func simulate(t testing.TB) {
	simulatedDisk = true
	t.Cleanup(func() { simulatedDisk = false })
}

// memDir is a temporary directory in memory (/dev/shm) when there is one:
// on a disk, the harness's rewriting of files costs writeback waits.
func memDir(t testing.TB) string {
	dir, err := os.MkdirTemp("/dev/shm", "fieldgate-powercut-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func scriptSeed(script []byte) int64 {
	f := fnv.New64a()
	f.Write(script)
	return int64(f.Sum64())
}

func runScript(t testing.TB, dir string, script []byte) {
	if len(script) == 0 {
		return
	}
	always := script[0]%5 == 0
	h := newCutHarness(t, dir, scriptSeed(script), always)
	h.run(script[1:])
}

// FuzzPowerCut: the fuzzer writes scripts; the seeds in
// testdata/fuzz/FuzzPowerCut run with every `go test`.
func FuzzPowerCut(f *testing.F) {
	f.Add([]byte{1, 0, 10, 20, 3, 13, 5, 6, 0, 3, 9, 3, 5})
	f.Add([]byte{0, 50, 3, 15, 6, 20, 33, 9, 40, 3, 5, 9})
	f.Add([]byte{2, 0, 7, 0, 3, 3, 13, 5, 7, 18, 3, 5, 28})
	simulate(f)
	f.Fuzz(func(t *testing.T, script []byte) {
		if len(script) > 200 {
			script = script[:200]
		}
		runScript(t, memDir(t), script)
	})
}

// TestPowerCutRandom runs many random scripts in every `go test`.
func TestPowerCutRandom(t *testing.T) {
	n := 300
	if testing.Short() {
		n = 30
	}
	simulate(t)
	base := memDir(t)
	rnd := rand.New(rand.NewSource(20261130))
	for i := 0; i < n; i++ {
		script := make([]byte, 20+rnd.Intn(60))
		rnd.Read(script)
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			dir := filepath.Join(base, fmt.Sprint(i))
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(dir)
			runScript(t, dir, script)
		})
	}
}
