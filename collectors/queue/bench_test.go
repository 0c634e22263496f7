package queue

import (
	"context"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/tidwall/wal"
)

// BenchmarkQueueFormats compares, in one run, what one published batch
// costs in the queue before format 2 (tidwall/wal, as of commit 160f207: a
// pwrite of the seq counter, the record encoded into a new buffer and
// copied into tidwall's in-memory tail, fsync every second) and now
// (queue.Append: one pwrite; the seq reservation fsynced with the sync).
// "append" fills the queue (broker away); "live" sends and acknowledges
// each batch right after it is appended, as a connected collector does.
// Batches of 7 kB: 100 readings. cpu-ns/op is the process's user+system
// CPU per batch: wall time here is mostly the kernel throttling the writer
// of hundreds of MB of dirty pages, the same for both.
func BenchmarkQueueFormats(b *testing.B) {
	payload := make([]byte, 7000)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	for _, mode := range []string{"append", "live"} {
		b.Run("tidwall/"+mode, func(b *testing.B) {
			q := openTidwall(b, b.TempDir())
			defer q.close()
			ts := time.Now()
			b.SetBytes(int64(len(payload)))
			cpu := cpuTime()
			for i := 0; b.Loop(); i++ {
				q.append(Record{Seq: uint64(i + 1), TS: ts, Topic: "fieldgate/gw/data/c/d", Payload: payload})
				if mode == "live" {
					q.sendAndAck()
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
		})
		b.Run("segmented/"+mode, func(b *testing.B) {
			q := open(b, Config{Dir: b.TempDir(), MaxBytes: 1 << 40})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { q.RunSync(ctx); close(done) }()
			defer func() { cancel(); <-done; q.Close() }()
			ts := time.Now()
			b.SetBytes(int64(len(payload)))
			cpu := cpuTime()
			for i := 0; b.Loop(); i++ {
				if err := q.Append(Record{Seq: uint64(i + 1), TS: ts, Topic: "fieldgate/gw/data/c/d", Payload: payload}); err != nil {
					b.Fatal(err)
				}
				if mode == "live" {
					r, ok := q.Next(ctx)
					if !ok {
						b.Fatal("nothing to send")
					}
					q.Ack(r.Seq)
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}

// cpuTime is the process's user+system CPU time in ns.
func cpuTime() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// tidwallQueue is the hot path of the queue before format 2, kept to be
// measured against: Append, Next+Ack and the periodic sync as that code did
// them.
type tidwallQueue struct {
	log      *wal.Log
	seq, ack *os.File
	first    uint64 // index of the oldest record
	next     uint64 // index the next append gets
	uncut    int64
	lastSync time.Time
	seqBuf   []byte
}

func openTidwall(b *testing.B, dir string) *tidwallQueue {
	opts := *wal.DefaultOptions
	opts.NoSync = true
	opts.SegmentSize = 4 << 20
	opts.AllowEmpty = true
	l, err := wal.Open(filepath.Join(dir, "log"), &opts)
	if err != nil {
		b.Fatal(err)
	}
	seq, _ := os.Create(filepath.Join(dir, "seq"))
	ack, _ := os.Create(filepath.Join(dir, "acked"))
	return &tidwallQueue{log: l, seq: seq, ack: ack, first: 1, next: 1, lastSync: time.Now()}
}

func (q *tidwallQueue) append(r Record) {
	// The seq counter: one pwrite per batch.
	q.seqBuf = strconv.AppendUint(q.seqBuf[:0], r.Seq, 10)
	for len(q.seqBuf) < 100 {
		q.seqBuf = append(q.seqBuf, ' ')
	}
	q.seq.WriteAt(q.seqBuf, 0)
	if err := q.log.Write(q.next, encodeFormat1(r)); err != nil {
		panic(err)
	}
	q.next++
	if time.Since(q.lastSync) >= time.Second {
		q.log.Sync()
		q.ack.Sync()
		q.lastSync = time.Now()
	}
}

func (q *tidwallQueue) sendAndAck() {
	data, err := q.log.Read(q.first)
	if err != nil {
		panic(err)
	}
	if _, err := decodeLegacy(data); err != nil {
		panic(err)
	}
	q.ack.WriteAt([]byte(strconv.FormatUint(q.first, 10)+"                    \n"), 0)
	q.first++
	q.uncut += int64(len(data))
	if q.uncut >= 4<<20 {
		q.uncut = 0
		q.log.TruncateFront(q.first)
	}
}

func (q *tidwallQueue) close() {
	q.log.Close()
	q.seq.Close()
	q.ack.Close()
}

// encodeFormat1 is the record encoding of format 1: crc32c(rest) u32 | seq
// u64 | ts unix ms i64 | topic len u16 | topic | payload.
func encodeFormat1(r Record) []byte {
	b := make([]byte, 22, 22+len(r.Topic)+len(r.Payload))
	binary.BigEndian.PutUint64(b[4:], r.Seq)
	binary.BigEndian.PutUint64(b[12:], uint64(r.TS.UnixMilli()))
	binary.BigEndian.PutUint16(b[20:], uint16(len(r.Topic)))
	b = append(b, r.Topic...)
	b = append(b, r.Payload...)
	binary.BigEndian.PutUint32(b, crc32.Checksum(b[4:], castagnoli))
	return b
}
