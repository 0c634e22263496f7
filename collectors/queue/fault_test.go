package queue

import (
	"context"
	"encoding/binary"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fieldgate/internal/testpeer"
)

// appendRange appends seqs from..to, failing the test on an error.
func appendRange(t testing.TB, q *Queue, from, to uint64, ts time.Time) {
	t.Helper()
	for s := from; s <= to; s++ {
		if err := q.Append(rec(s, ts)); err != nil {
			t.Fatalf("append %d: %v", s, err)
		}
	}
}

// drain takes every record Next gives within a short wait, acking each.
func drain(t testing.TB, q *Queue) []Record {
	t.Helper()
	var got []Record
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		r, ok := q.Next(ctx)
		cancel()
		if !ok {
			return got
		}
		got = append(got, r)
		q.Ack(r.Seq)
	}
}

func seqs(rs []Record) []uint64 {
	out := make([]uint64, len(rs))
	for i, r := range rs {
		out[i] = r.Seq
	}
	return out
}

// frameOffsets lists where each frame of a segment file starts.
func frameOffsets(t testing.TB, path string) []scanned {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return scan(data, headerSize, 0).records
}

func writeAck(t testing.TB, dir string, seq uint64) {
	t.Helper()
	s, _, _, err := openSlots(filepath.Join(dir, "ack"), "FGQA", ackSlotSize)
	if err != nil {
		t.Fatal(err)
	}
	var p [8]byte
	binary.BigEndian.PutUint64(p[:], seq)
	if err := s.write(p[:]); err != nil {
		t.Fatal(err)
	}
	s.close()
}

// TestAckPastLog: an acknowledged position that reached the disk before the
// log's tail used to make every later append fail "out of order". It is
// clamped and counted, and the queue goes on after it.
func TestAckPastLog(t *testing.T) {
	for _, clean := range []bool{true, false} {
		t.Run(fmt.Sprintf("clean=%v", clean), func(t *testing.T) {
			dir := t.TempDir()
			q := open(t, Config{Dir: dir})
			appendRange(t, q, 1, 5, time.Now())
			if clean {
				q.Close()
			} else {
				q.abandon()
			}
			writeAck(t, dir, 9)
			q = open(t, Config{Dir: dir})
			defer q.Close()
			st := q.Stats()
			if st.AckClamped != 1 || st.Pending != 0 || q.LastSeq() != 9 {
				t.Fatalf("stats %+v, last seq %d: want the ack clamped once, nothing pending, numbering after 9", st, q.LastSeq())
			}
			appendRange(t, q, 10, 11, time.Now())
			if got := seqs(drain(t, q)); fmt.Sprint(got) != "[10 11]" {
				t.Fatalf("sent %v, want [10 11]", got)
			}
		})
	}
}

// TestDamagedRecords: one damaged record in the middle of the log is
// skipped and counted; every other record is still sent, and the queue
// takes new ones.
func TestDamagedRecords(t *testing.T) {
	tests := []struct {
		name    string
		damage  func(b []byte, f scanned) // record 3 of 1..5
		corrupt uint64
		want    string
	}{
		{"flipped payload byte", func(b []byte, f scanned) { b[f.off+int64(f.size)-3] ^= 0x20 }, 1, "[1 2 4 5 6]"},
		{"flipped magic", func(b []byte, f scanned) { b[f.off] ^= 0xff }, 1, "[1 2 4 5 6]"},
		{"length past the end", func(b []byte, f scanned) { binary.BigEndian.PutUint32(b[f.off+4:], 0x3ffffff0) }, 1, "[1 2 4 5 6]"},
		{"length too short", func(b []byte, f scanned) { binary.BigEndian.PutUint32(b[f.off+4:], 5) }, 1, "[1 2 4 5 6]"},
		{"zeroed record", func(b []byte, f scanned) { clear(b[f.off : f.off+int64(f.size)]) }, 1, "[1 2 4 5 6]"},
		{"damaged segment header", func(b []byte, _ scanned) { b[3] ^= 0xff }, 1, "[1 2 3 4 5 6]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			q := open(t, Config{Dir: dir})
			appendRange(t, q, 1, 5, time.Now().Add(-time.Hour))
			q.Close()
			path := newestSegment(t, dir)
			frames := frameOffsets(t, path)
			data, _ := os.ReadFile(path)
			tc.damage(data, frames[2])
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			for round := 0; round < 2; round++ { // the damage stays readable-around
				q = open(t, Config{Dir: dir})
				if st := q.Stats(); st.Corrupt != tc.corrupt {
					t.Fatalf("round %d: corrupt %d, want %d (stats %+v)", round, st.Corrupt, tc.corrupt, st)
				}
				if round == 1 {
					break
				}
				if q.LastSeq() != 5 {
					t.Fatalf("last seq %d, want 5", q.LastSeq())
				}
				q.Close()
			}
			defer q.Close()
			appendRange(t, q, 6, 6, time.Now().Add(-time.Hour))
			if got := seqs(drain(t, q)); fmt.Sprint(got) != tc.want {
				t.Fatalf("sent %v, want %s", got, tc.want)
			}
		})
	}
}

// TestTornSegmentInTheMiddle: a segment whose end was lost (a power cut
// before it was synced, while the next one reached the disk) costs the
// records in that end, not the segments after it.
func TestTornSegmentInTheMiddle(t *testing.T) {
	dir := t.TempDir()
	size := int64(headerSize + 3*frameSize(rec(1, time.Now())))
	q := open(t, Config{Dir: dir, SegmentBytes: size})
	appendRange(t, q, 1, 9, time.Now().Add(-time.Hour))
	q.abandon()
	paths := segments(t, dir)
	if len(paths) != 3 {
		t.Fatalf("%d segments, want 3 of 3 records", len(paths))
	}
	frames := frameOffsets(t, paths[1])
	if err := os.Truncate(paths[1], frames[1].off+5); err != nil {
		t.Fatal(err)
	}
	q = open(t, Config{Dir: dir, SegmentBytes: size})
	defer q.Close()
	if st := q.Stats(); st.Corrupt != 1 || st.Pending != 7 {
		t.Fatalf("stats %+v: want one damaged tail and 7 records", st)
	}
	if got := seqs(drain(t, q)); fmt.Sprint(got) != "[1 2 3 4 7 8 9]" {
		t.Fatalf("sent %v", got)
	}
}

// TestDiskFull: on a full disk appends go to the memory fallback (still
// sent, the queue degraded with the reason); past its bound the oldest are
// dropped and counted; once acknowledgements free the disk, appends go
// back to it without a restart.
func TestDiskFull(t *testing.T) {
	disk := testpeer.Tmpfs(t, "256k")
	cfg := Config{Dir: filepath.Join(disk, "queue"), SegmentBytes: 64 << 10, MemoryBytes: 32 << 10}
	q := open(t, cfg)
	payload := make([]byte, 2000)
	ts := time.Now().Add(-time.Hour)
	var seq uint64
	add := func() {
		t.Helper()
		seq++
		if err := q.Append(Record{Seq: seq, TS: ts, Topic: "t", Payload: payload}); err != nil {
			t.Fatalf("append %d: %v", seq, err)
		}
	}
	// The broker is away: nothing leaves until the disk is full.
	for q.Stats().AppendFailed == 0 {
		if seq > 1000 {
			t.Fatalf("the 256 KiB disk never filled: %+v", q.Stats())
		}
		add()
	}
	st := q.Stats()
	if !strings.Contains(st.Degraded, "no space left on device") || st.InMemory != 1 {
		t.Fatalf("stats %+v: want degraded with the reason and one record in memory", st)
	}
	onDisk := seq - 1
	// The memory fallback holds 32 KiB: past it the oldest are dropped.
	for q.Stats().Dropped == 0 {
		add()
	}
	for i := 0; i < 5; i++ {
		add()
	}
	st = q.Stats()
	if st.InMemory == 0 || int64(st.InMemory*frameSize(Record{Topic: "t", Payload: payload})) > cfg.MemoryBytes {
		t.Fatalf("stats %+v: the memory fallback is empty or past its bound", st)
	}
	// The broker is back: everything kept is sent, nothing twice.
	got := drain(t, q)
	seen := map[uint64]bool{}
	for _, r := range got {
		if seen[r.Seq] {
			t.Fatalf("seq %d sent twice", r.Seq)
		}
		seen[r.Seq] = true
	}
	for s := uint64(1); s <= onDisk; s++ {
		if !seen[s] {
			t.Fatalf("seq %d, on disk, not sent", s)
		}
	}
	if lost := seq - uint64(len(got)); lost != q.Stats().Dropped {
		t.Fatalf("%d of %d seqs not sent, but %d counted dropped", lost, seq, q.Stats().Dropped)
	}
	// Space is back: appends reach the disk again.
	add()
	if st := q.Stats(); st.Degraded != "" || st.InMemory != 0 {
		t.Fatalf("after acknowledgements freed the disk: %+v", st)
	}
	if r := drain(t, q); len(r) != 1 || r[0].Seq != seq {
		t.Fatalf("after recovery sent %v", seqs(r))
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = open(t, cfg)
	defer q.Close()
	if q.LastSeq() != seq || q.Stats().Resumed != nil {
		t.Fatalf("reopened: last seq %d (want %d), %+v", q.LastSeq(), seq, q.Stats())
	}
}

// TestResume: where numbering goes on after each kind of stop, and what is
// reported lost.
func TestResume(t *testing.T) {
	tests := []struct {
		name   string
		sync   time.Duration
		stop   func(t *testing.T, q *Queue, dir string)
		boot   string
		next   func(reserved uint64) uint64
		reason string
		after  uint64
	}{
		{"clean stop", 0, func(_ *testing.T, q *Queue, _ string) { q.Close() }, "boot-a",
			func(uint64) uint64 { return 21 }, "", 0},
		{"process crash", 0, func(_ *testing.T, q *Queue, _ string) { q.abandon() }, "boot-a",
			func(uint64) uint64 { return 21 }, "", 0},
		{"power cut", 0, func(_ *testing.T, q *Queue, _ string) { q.abandon() }, "boot-b",
			func(r uint64) uint64 { return r + 1 }, "unclean stop", 15},
		{"power cut, sync always", SyncAlways, func(_ *testing.T, q *Queue, _ string) { q.abandon() }, "boot-b",
			func(uint64) uint64 { return 21 }, "unclean stop", 20},
		{"crash with a torn tail", 0, func(t *testing.T, q *Queue, dir string) {
			q.abandon()
			f, err := os.OpenFile(newestSegment(t, dir), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write(frameMagic[:])
			f.Close()
		}, "boot-a", func(r uint64) uint64 { return r + 1 }, "torn log tail", 15},
		{"seq state lost", 0, func(t *testing.T, q *Queue, dir string) {
			q.abandon()
			os.Remove(filepath.Join(dir, "reservation"))
		}, "boot-a", func(uint64) uint64 { return 20 + legacySeqMargin + 1 }, "seq state unreadable", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			q := open(t, Config{Dir: dir, Sync: tc.sync, BootID: "boot-a"})
			appendRange(t, q, 1, 15, time.Now())
			if err := q.Sync(); err != nil {
				t.Fatal(err)
			}
			appendRange(t, q, 16, 20, time.Now())
			q.mu.Lock()
			reserved := q.reserved
			q.mu.Unlock()
			tc.stop(t, q, dir)
			q = open(t, Config{Dir: dir, Sync: tc.sync, BootID: tc.boot})
			defer q.Close()
			want := tc.next(reserved)
			if got := q.LastSeq() + 1; got != want {
				t.Errorf("next seq %d, want %d (reserved %d)", got, want, reserved)
			}
			r := q.Stats().Resumed
			switch {
			case tc.reason == "" && r != nil:
				t.Errorf("resumed %+v, want none", *r)
			case tc.reason != "" && (r == nil || !strings.Contains(r.Reason, tc.reason) || r.NextSeq != want || r.AfterSeq < tc.after):
				t.Errorf("resumed %+v, want reason %q, after_seq ≥ %d, next %d", r, tc.reason, tc.after, want)
			}
			// Whatever the stop, what was written is there.
			if st := q.Stats(); st.Pending < 15 {
				t.Errorf("pending %d, want ≥ 15", st.Pending)
			}
		})
	}
}

func copyTree(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestMigrateFormat1: queues written by the tidwall/wal version (fixtures in
// testdata/legacy) are read once, their pending batches sent with their
// seqs and content, and numbering goes on where that version would have.
func TestMigrateFormat1(t *testing.T) {
	tests := []struct {
		fixture  string
		acked    string // replaces the fixture's acked file when set
		next     uint64
		pending  []uint64
		clamped  uint64
		resumed  bool
		corrupts uint64
	}{
		{fixture: "clean", next: 13, pending: []uint64{6, 7, 8, 9, 10, 11, 12}},
		// Stopped unclean under another boot: format 1 resumed past its reservation.
		{fixture: "crash", next: 10002, pending: []uint64{6, 7, 8, 9, 10, 11, 12}, resumed: true},
		// The bug of issue 8: acked reached the disk, the log's tail did not.
		{fixture: "crash", acked: "40", next: 10002, clamped: 1, resumed: true},
	}
	for _, tc := range tests {
		t.Run(tc.fixture+tc.acked, func(t *testing.T) {
			data := t.TempDir()
			copyTree(t, filepath.Join("testdata", "legacy", tc.fixture), data)
			if tc.acked != "" {
				os.WriteFile(filepath.Join(data, "queue", "acked"), []byte(tc.acked+"\n"), 0o644)
			}
			cfg := Config{Dir: filepath.Join(data, "queue"), LegacySeqFile: filepath.Join(data, "seq"), BootID: "boot-now"}
			q := open(t, cfg)
			st := q.Stats()
			if q.LastSeq()+1 != tc.next || st.Pending != len(tc.pending) || st.AckClamped != tc.clamped || (st.Resumed != nil) != tc.resumed {
				t.Fatalf("next %d, stats %+v; want next %d, %d pending, clamped %d, resumed %v", q.LastSeq()+1, st, tc.next, len(tc.pending), tc.clamped, tc.resumed)
			}
			if _, err := os.Stat(filepath.Join(data, "queue", "log")); !os.IsNotExist(err) {
				t.Errorf("format 1 log still there: %v", err)
			}
			q.Close()
			// Reopened: nothing migrated twice, nothing lost.
			q = open(t, cfg)
			defer q.Close()
			got := drain(t, q)
			if fmt.Sprint(seqs(got)) != fmt.Sprint(tc.pending) && !(len(got) == 0 && len(tc.pending) == 0) {
				t.Fatalf("sent %v, want %v", seqs(got), tc.pending)
			}
			for _, r := range got {
				if want := fmt.Sprintf(`"seq":%d,`, r.Seq); !strings.Contains(string(r.Payload), want) || r.Topic != "fieldgate/gw1/data/c/d" {
					t.Errorf("record %d: topic %q payload %s", r.Seq, r.Topic, r.Payload)
				}
			}
			if q.LastSeq()+1 != tc.next {
				t.Errorf("after a clean reopen next seq %d, want %d", q.LastSeq()+1, tc.next)
			}
		})
	}
}

// TestLegacySeqFileForRollback: the format-1 counter stays ahead of every
// seq this version may send, and exact after a clean stop, so an older
// collector started on the same data never reuses a seq.
func TestLegacySeqFileForRollback(t *testing.T) {
	dir := t.TempDir()
	legacy := filepath.Join(dir, "seq")
	cfg := Config{Dir: filepath.Join(dir, "queue"), LegacySeqFile: legacy, BootID: "boot-a"}
	q := open(t, cfg)
	appendRange(t, q, 1, 50, time.Now())
	drain(t, q) // extends the reservation as it goes
	q.mu.Lock()
	reserved := q.reserved
	q.mu.Unlock()
	// Running: format 1 (same boot, "running") resumes after the first field.
	if ls := readLegacySeq(legacy, "boot-a"); !ls.ok || !ls.ours || ls.resume < reserved {
		t.Fatalf("legacy counter %+v while running, reservation %d", ls, reserved)
	}
	q.Close()
	raw, _ := os.ReadFile(legacy)
	if f := strings.Fields(string(raw)); len(f) != 5 || f[0] != "50" || f[3] != "clean" {
		t.Fatalf("legacy counter after a clean stop: %q", raw)
	}
}

// TestPrivateFiles: everything the queue writes is 0600, its directories
// 0700 — also those an older version left more open.
func TestPrivateFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "queue")
	os.MkdirAll(filepath.Join(dir, segmentsDir), 0o755)
	q := open(t, Config{Dir: dir, LegacySeqFile: filepath.Join(dir, "..", "seq")})
	appendRange(t, q, 1, 3, time.Now())
	drain(t, q)
	appendRange(t, q, 4, 4, time.Now())
	q.Close()
	testpeer.CheckPrivate(t, filepath.Dir(dir))
}

func TestOneProcessPerQueue(t *testing.T) {
	dir := t.TempDir()
	q := open(t, Config{Dir: dir})
	defer q.Close()
	if _, err := Open(Config{Dir: dir}, discard()); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Open: %v, want in use", err)
	}
}
