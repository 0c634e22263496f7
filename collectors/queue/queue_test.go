package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func open(t testing.TB, cfg Config) *Queue {
	t.Helper()
	q, err := Open(cfg, discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() }) // before the directory goes (or is unmounted)
	return q
}

func rec(seq uint64, ts time.Time) Record {
	return Record{Seq: seq, TS: ts, Topic: "fieldgate/gw/data/c/d", Payload: []byte(fmt.Sprintf(`{"seq":%d}`, seq))}
}

func next(t testing.TB, q *Queue) Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, ok := q.Next(ctx)
	if !ok {
		t.Fatal("Next: nothing to send")
	}
	return r
}

func TestOrderAckAndReopen(t *testing.T) {
	dir := t.TempDir()
	q := open(t, Config{Dir: dir})
	old := time.Now().Add(-time.Hour)
	for s := uint64(1); s <= 5; s++ {
		if err := q.Append(rec(s, old)); err != nil {
			t.Fatal(err)
		}
	}
	for s := uint64(1); s <= 3; s++ {
		r := next(t, q)
		if r.Seq != s || string(r.Payload) != fmt.Sprintf(`{"seq":%d}`, s) || r.Topic != "fieldgate/gw/data/c/d" {
			t.Fatalf("record %+v, want seq %d", r, s)
		}
	}
	q.Ack(2) // out of order: acknowledged, the position on disk waits for 1
	if st := q.Stats(); st.Pending != 4 {
		t.Fatalf("pending %d after out-of-order ack", st.Pending)
	}
	q.Ack(1)
	if st := q.Stats(); st.Pending != 3 {
		t.Fatalf("pending %d, want 3", st.Pending)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = open(t, Config{Dir: dir})
	defer q.Close()
	if q.LastSeq() != 5 {
		t.Errorf("LastSeq = %d", q.LastSeq())
	}
	for _, want := range []uint64{3, 4, 5} {
		if r := next(t, q); r.Seq != want {
			t.Fatalf("after reopen got seq %d, want %d", r.Seq, want)
		}
	}
}

func TestCrashWithoutCloseKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	q := open(t, Config{Dir: dir, Sync: time.Hour})
	for s := uint64(1); s <= 100; s++ {
		if err := q.Append(rec(s, time.Now())); err != nil {
			t.Fatal(err)
		}
	}
	next(t, q)
	q.Ack(1)
	// No Close: like kill -9, only what write(2) put in the page cache.
	q.abandon()
	q2 := open(t, Config{Dir: dir})
	defer q2.Close()
	if st := q2.Stats(); st.Pending != 99 || st.Resumed != nil || q2.LastSeq() != 100 {
		t.Fatalf("after a crash: stats %+v, last seq %d; want 99 pending, numbering after 100, no loss reported", st, q2.LastSeq())
	}
}

// abandon closes the files without a word to the disk, like kill -9.
func (q *Queue) abandon() {
	q.resMu.Lock()
	defer q.resMu.Unlock()
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		close(q.done)
		q.closeFiles()
	}
}

func segments(t testing.TB, dir string) []string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, segmentsDir, "*"+segSuffix))
	if err != nil {
		t.Fatal(err)
	}
	return paths
}

func newestSegment(t testing.TB, dir string) string {
	t.Helper()
	paths := segments(t, dir)
	if len(paths) == 0 {
		t.Fatal("no segment")
	}
	return paths[len(paths)-1]
}

func TestTornTailIsCut(t *testing.T) {
	full := appendFrame(nil, rec(99, time.Now()))
	tests := []struct {
		name string
		tail []byte
	}{
		{"partial frame", full[:len(full)/2]},
		{"zero-filled", make([]byte, 64)},
		{"frame failing its checksum", append(append([]byte(nil), full[:len(full)-1]...), full[len(full)-1]^0xff)},
		{"garbage", []byte("garbage after the last frame")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			q := open(t, Config{Dir: dir})
			for s := uint64(1); s <= 3; s++ {
				_ = q.Append(rec(s, time.Now()))
			}
			q.Close()
			f, err := os.OpenFile(newestSegment(t, dir), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write(tc.tail)
			f.Close()
			q = open(t, Config{Dir: dir})
			defer q.Close()
			if st := q.Stats(); st.Pending != 3 || st.Repaired == 0 {
				t.Fatalf("stats %+v, want 3 pending and a repair", st)
			}
			if err := q.Append(rec(4, time.Now())); err != nil {
				t.Fatal(err)
			}
			for want := uint64(1); want <= 4; want++ {
				if r := next(t, q); r.Seq != want {
					t.Fatalf("seq %d, want %d", r.Seq, want)
				}
			}
		})
	}
}

func TestFullPolicies(t *testing.T) {
	size := int64(frameSize(rec(1, time.Now())))
	t.Run("drop_oldest", func(t *testing.T) {
		q := open(t, Config{Dir: t.TempDir(), MaxBytes: 3 * size})
		defer q.Close()
		for s := uint64(1); s <= 5; s++ {
			if err := q.Append(rec(s, time.Now().Add(-time.Hour))); err != nil {
				t.Fatal(err)
			}
		}
		if st := q.Stats(); st.Pending != 3 || st.Dropped != 2 {
			t.Fatalf("stats %+v", st)
		}
		if r := next(t, q); r.Seq != 3 {
			t.Fatalf("oldest kept = %d, want 3", r.Seq)
		}
	})
	t.Run("reject_new", func(t *testing.T) {
		q := open(t, Config{Dir: t.TempDir(), MaxBytes: 3 * size, Policy: RejectNew})
		defer q.Close()
		var rejected int
		for s := uint64(1); s <= 5; s++ {
			if err := q.Append(rec(s, time.Now())); errors.Is(err, ErrFull) {
				rejected++
			} else if err != nil {
				t.Fatal(err)
			}
		}
		if st := q.Stats(); rejected != 2 || st.Rejected != 2 || st.Pending != 3 {
			t.Fatalf("rejected %d stats %+v", rejected, st)
		}
	})
	t.Run("max_age", func(t *testing.T) {
		q := open(t, Config{Dir: t.TempDir(), MaxAge: time.Minute})
		defer q.Close()
		_ = q.Append(rec(1, time.Now().Add(-2*time.Minute)))
		_ = q.Append(rec(2, time.Now()))
		if st := q.Stats(); st.Pending != 1 || st.Dropped != 1 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("unknown policy", func(t *testing.T) {
		if _, err := Open(Config{Dir: t.TempDir(), Policy: "drop_newest"}, discard()); err == nil {
			t.Fatal("no error")
		}
	})
}

func TestLiveFirstDuringBacklog(t *testing.T) {
	q := open(t, Config{Dir: t.TempDir(), LiveAge: time.Minute})
	defer q.Close()
	old := time.Now().Add(-time.Hour)
	for s := uint64(1); s <= 3; s++ {
		_ = q.Append(rec(s, old))
	}
	_ = q.Append(rec(4, time.Now()))
	_ = q.Append(rec(5, time.Now()))
	var got []uint64
	for i := 0; i < 5; i++ {
		got = append(got, next(t, q).Seq)
	}
	want := []uint64{4, 5, 1, 2, 3}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("send order %v, want %v", got, want)
	}
	for _, s := range got {
		q.Ack(s)
	}
	if st := q.Stats(); st.Pending != 0 || st.Bytes != 0 {
		t.Fatalf("stats %+v after acking all", st)
	}
}

func TestResend(t *testing.T) {
	q := open(t, Config{Dir: t.TempDir()})
	defer q.Close()
	old := time.Now().Add(-time.Hour)
	for s := uint64(1); s <= 3; s++ {
		_ = q.Append(rec(s, old))
	}
	next(t, q)
	next(t, q)
	q.Resend(1)
	if r := next(t, q); r.Seq != 1 {
		t.Fatalf("after resend got %d", r.Seq)
	}
	if r := next(t, q); r.Seq != 3 {
		t.Fatalf("then got %d, want 3", r.Seq)
	}
}

func BenchmarkAppend(b *testing.B) {
	payload := make([]byte, 2000)
	for _, sync := range []time.Duration{time.Second, SyncAlways} {
		b.Run("sync="+sync.String(), func(b *testing.B) {
			q := open(b, Config{Dir: b.TempDir(), Sync: sync})
			defer q.Close()
			ts := time.Now()
			b.SetBytes(int64(len(payload)))
			for i := 0; b.Loop(); i++ {
				if err := q.Append(Record{Seq: uint64(i + 1), TS: ts, Topic: "t", Payload: payload}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "batches/s")
		})
	}
}

func BenchmarkDrain(b *testing.B) {
	q := open(b, Config{Dir: b.TempDir(), Sync: time.Second, MaxBytes: 1 << 40})
	defer q.Close()
	payload := make([]byte, 2000)
	old := time.Now().Add(-time.Hour)
	for i := 0; i < b.N; i++ {
		_ = q.Append(Record{Seq: uint64(i + 1), TS: old, Topic: "t", Payload: payload})
	}
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, _ := q.Next(ctx)
		q.Ack(r.Seq)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "batches/s")
}

// TestAcknowledgedRecordsLeaveTheDisk: a queue that keeps flowing never grows
// past a few segments, whether it empties between batches or never does.
func TestAcknowledgedRecordsLeaveTheDisk(t *testing.T) {
	dir := t.TempDir()
	q := open(t, Config{Dir: dir, MaxBytes: 1 << 40})
	defer q.Close()
	payload := make([]byte, 8000)
	ctx := context.Background()
	seq := uint64(0)
	// 3 segments' worth while always one record behind (never empty).
	_ = q.Append(Record{Seq: 1, TS: time.Now(), Topic: "t", Payload: payload})
	seq = 1
	for written := 0; written < 3*DefaultSegmentBytes; written += len(payload) {
		seq++
		if err := q.Append(Record{Seq: seq, TS: time.Now(), Topic: "t", Payload: payload}); err != nil {
			t.Fatal(err)
		}
		r, _ := q.Next(ctx)
		q.Ack(r.Seq)
	}
	var size int64
	for _, p := range segments(t, dir) {
		if fi, err := os.Stat(p); err == nil {
			size += fi.Size()
		}
	}
	if size > 2*DefaultSegmentBytes+int64(len(payload))*4 {
		t.Errorf("log holds %d bytes after acknowledging everything but one record", size)
	}
}
