// Package queue is the collectors' durable outbound queue (DESIGN.md,
// "Reliability"): every reading batch is appended here before it is
// published and leaves only when the broker acknowledged it, across broker
// outages, collector crashes and power loss.
//
// Storage is github.com/tidwall/wal, a small, well-tested segmented
// append-only log: appends are one write(2) each (so a kill -9 loses nothing
// that Append accepted), fsync happens per the Sync setting, and a torn tail
// after power loss is cut off at open (each record carries a CRC-32C, which
// also rejects the zero-filled tail a file system may leave).
//
// Records are sent live-first: while a backlog drains after an outage, records
// younger than LiveAge are sent before older ones, so live readings stay no
// more than a few seconds late; the backlog fills the rest of the window.
package queue

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/tidwall/wal"
)

// Defaults of Config.
const (
	DefaultMaxBytes = 256 << 20
	DefaultSync     = time.Second
	DefaultLiveAge  = 3 * time.Second
	segmentSize     = 4 << 20
	// Acknowledged records are cut from the log's front when the queue is
	// empty (cheap: tidwall/wal then starts an empty segment), at most every
	// truncateEvery, or once a segment's worth is acknowledged during a
	// backlog (cutting mid-segment rewrites the segment's remainder, so it is
	// amortised over that much data).
	truncateEvery = 5 * time.Second
)

// Policies for a full queue.
const (
	DropOldest = "drop_oldest"
	RejectNew  = "reject_new"
)

// SyncAlways as Config.Sync fsyncs every append.
const SyncAlways time.Duration = -1

// ErrFull is returned by Append under RejectNew when the queue is full.
var ErrFull = errors.New("outbound queue full")

// Config sets the queue's bounds and durability.
type Config struct {
	// Dir holds the log segments and the acknowledged position.
	Dir string
	// MaxBytes bounds the records waiting; default DefaultMaxBytes (256 MiB).
	MaxBytes int64
	// MaxAge drops records older than this (counted); 0 keeps them.
	MaxAge time.Duration
	// Sync is the longest time an appended record may wait for fsync:
	// d > 0 syncs at most every d (a power failure loses at most the last d of
	// readings; a process crash loses nothing), SyncAlways syncs every Append
	// (nothing lost on power failure, ~1.7 ms per batch on a virtio disk),
	// 0 means DefaultSync.
	Sync time.Duration
	// Policy applies when full: DropOldest (default) or RejectNew.
	Policy string
	// LiveAge: records younger than this are sent before older ones;
	// default DefaultLiveAge.
	LiveAge time.Duration
}

// Record is one encoded batch.
type Record struct {
	Seq     uint64
	TS      time.Time // the poll time of the batch
	Topic   string
	Payload []byte
}

// Stats are the queue's counters.
type Stats struct {
	Pending  int    // records not yet acknowledged
	Bytes    int64  // their size
	Dropped  uint64 // records dropped by DropOldest or MaxAge
	Rejected uint64 // appends refused by RejectNew
	Repaired int    // torn records cut off at open
}

// meta is what the queue keeps in memory per unacknowledged record.
type meta struct {
	seq   uint64
	ts    int64 // unix ms
	size  int32
	sent  bool
	acked bool
}

// Queue is a durable FIFO of records. Create it with Open; it is safe for
// concurrent use.
type Queue struct {
	cfg  Config
	log  *wal.Log
	slog *slog.Logger

	mu       sync.Mutex
	first    uint64 // wal index of recs[0]
	recs     []meta // records from the acknowledged head to the last
	sendAt   int    // recs[:sendAt] have all been sent at least once
	livePos  int    // young records before livePos have been sent
	bytes    int64
	stats    Stats
	ackFile  *os.File
	lastCut  time.Time
	uncut    int64 // bytes acknowledged since the last cut
	wake     chan struct{}
	lastSync time.Time
	dirty    bool
	closed   bool
}

// Open opens or creates the queue in cfg.Dir and loads what is waiting.
func Open(cfg Config, log *slog.Logger) (*Queue, error) {
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.Sync == 0 {
		cfg.Sync = DefaultSync
	}
	if cfg.LiveAge <= 0 {
		cfg.LiveAge = DefaultLiveAge
	}
	switch cfg.Policy {
	case "":
		cfg.Policy = DropOldest
	case DropOldest, RejectNew:
	default:
		return nil, fmt.Errorf("queue: unknown policy %q (valid: %s, %s)", cfg.Policy, DropOldest, RejectNew)
	}
	logDir := filepath.Join(cfg.Dir, "log")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	q := &Queue{cfg: cfg, slog: log, wake: make(chan struct{}, 1), lastCut: time.Now(), lastSync: time.Now()}
	opts := *wal.DefaultOptions
	opts.NoSync = cfg.Sync > 0
	opts.SegmentSize = segmentSize
	opts.AllowEmpty = true
	l, err := wal.Open(logDir, &opts)
	if errors.Is(err, wal.ErrCorrupt) {
		var cut int
		cut, err = repairTail(logDir)
		if err == nil {
			q.stats.Repaired = cut
			log.Warn("outbound queue: torn records cut off after an unclean stop", "dir", logDir, "bytes", cut)
			l, err = wal.Open(logDir, &opts)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("queue: open %q: %w", logDir, err)
	}
	q.log = l
	if err := q.load(); err != nil {
		l.Close()
		return nil, err
	}
	return q, nil
}

// load reads the acknowledged position and the metadata of every record after
// it, cutting invalid records off the end.
func (q *Queue) load() error {
	ackPath := filepath.Join(q.cfg.Dir, "acked")
	f, err := os.OpenFile(ackPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	q.ackFile = f
	buf := make([]byte, 32)
	n, _ := f.ReadAt(buf, 0)
	var acked uint64
	if s := trimSpace(buf[:n]); s != "" {
		if acked, err = strconv.ParseUint(s, 10, 64); err != nil {
			q.slog.Warn("outbound queue: acknowledged position unreadable, resending from the start", "file", ackPath, "content", s)
			acked = 0
		}
	}
	first, _ := q.log.FirstIndex()
	last, _ := q.log.LastIndex()
	// Cut records that fail their checksum off the end (a zero-filled tail).
	for last >= first && last > 0 {
		data, err := q.log.Read(last)
		if err == nil {
			if _, err = decode(data); err == nil {
				break
			}
		}
		if err := q.log.TruncateBack(last - 1); err != nil {
			return fmt.Errorf("queue: cut invalid record %d: %w", last, err)
		}
		q.stats.Repaired++
		last--
	}
	start := max(first, acked+1)
	q.first = start
	for i := start; i <= last && last > 0; i++ {
		data, err := q.log.Read(i)
		if err != nil {
			return fmt.Errorf("queue: read record %d: %w", i, err)
		}
		r, err := decode(data)
		if err != nil {
			return fmt.Errorf("queue: record %d is corrupt: %w", i, err)
		}
		q.recs = append(q.recs, meta{seq: r.Seq, ts: r.TS.UnixMilli(), size: int32(len(data))})
		q.bytes += int64(len(data))
	}
	if last == 0 {
		q.first = first
	}
	return nil
}

func trimSpace(b []byte) string {
	s := string(b)
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\n' || s[len(s)-1] == 0) {
		s = s[:len(s)-1]
	}
	return s
}

// LastSeq is the seq of the newest record in the queue (0 when empty), so a
// seq counter can be checked against what was durably queued.
func (q *Queue) LastSeq() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.recs) == 0 {
		return 0
	}
	return q.recs[len(q.recs)-1].seq
}

// Append adds r at the end. When the queue is full it drops the oldest
// records (DropOldest) or returns ErrFull (RejectNew); both are counted.
func (q *Queue) Append(r Record) error {
	data := encode(r)
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return errors.New("queue: closed")
	}
	size := int64(len(data))
	if q.bytes+size > q.cfg.MaxBytes && q.cfg.Policy == RejectNew {
		q.stats.Rejected++
		return ErrFull
	}
	for q.bytes+size > q.cfg.MaxBytes && len(q.recs) > 0 {
		q.dropHeadLocked()
	}
	if q.cfg.MaxAge > 0 {
		cutoff := time.Now().Add(-q.cfg.MaxAge).UnixMilli()
		for len(q.recs) > 0 && q.recs[0].ts < cutoff {
			q.dropHeadLocked()
		}
	}
	index := q.first + uint64(len(q.recs))
	if err := q.log.Write(index, data); err != nil {
		return fmt.Errorf("queue: append seq %d: %w", r.Seq, err)
	}
	q.recs = append(q.recs, meta{seq: r.Seq, ts: r.TS.UnixMilli(), size: int32(size)})
	q.bytes += size
	q.dirty = true
	if q.cfg.Sync > 0 && time.Since(q.lastSync) >= q.cfg.Sync {
		q.syncLocked()
	}
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return nil
}

func (q *Queue) dropHeadLocked() {
	q.bytes -= int64(q.recs[0].size)
	q.recs[0] = meta{}
	q.recs = q.recs[1:]
	q.first++
	q.sendAt = max(0, q.sendAt-1)
	q.livePos = max(0, q.livePos-1)
	q.stats.Dropped++
	q.persistAckLocked()
}

func (q *Queue) syncLocked() {
	if err := q.log.Sync(); err != nil {
		q.slog.Error("outbound queue: fsync failed", "err", err)
	}
	_ = q.ackFile.Sync()
	q.lastSync = time.Now()
	q.dirty = false
}

// RunSync fsyncs pending appends at the Sync period until ctx is cancelled,
// so a quiet queue also reaches the disk within Sync.
func (q *Queue) RunSync(ctx context.Context) error {
	if q.cfg.Sync <= 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(q.cfg.Sync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			q.mu.Lock()
			if q.dirty && !q.closed {
				q.syncLocked()
			}
			q.mu.Unlock()
		}
	}
}

// Next returns the next record to send, waiting for one until ctx ends.
// Unsent records younger than LiveAge go first; then the oldest unsent.
func (q *Queue) Next(ctx context.Context) (Record, bool) {
	for {
		q.mu.Lock()
		i := q.pickLocked()
		if i >= 0 {
			index := q.first + uint64(i)
			q.recs[i].sent = true
			data, err := q.log.Read(index)
			q.mu.Unlock()
			if err != nil {
				q.slog.Error("outbound queue: read failed", "index", index, "err", err)
				continue
			}
			r, err := decode(data)
			if err != nil {
				q.slog.Error("outbound queue: corrupt record skipped", "index", index, "err", err)
				continue
			}
			return r, true
		}
		q.mu.Unlock()
		select {
		case <-q.wake:
		case <-ctx.Done():
			return Record{}, false
		}
	}
}

// pickLocked chooses the record to send next, or -1. Records are in poll
// time order, so the young ones are found by binary search; livePos and
// sendAt only move forward between resends, which keeps a pick O(log n).
func (q *Queue) pickLocked() int {
	for q.sendAt < len(q.recs) && q.recs[q.sendAt].sent {
		q.sendAt++
	}
	if q.sendAt >= len(q.recs) {
		return -1
	}
	cutoff := time.Now().Add(-q.cfg.LiveAge).UnixMilli()
	young := sort.Search(len(q.recs), func(i int) bool { return q.recs[i].ts >= cutoff })
	for i := max(young, q.livePos, q.sendAt); i < len(q.recs); i++ {
		if !q.recs[i].sent {
			q.livePos = i + 1
			return i
		}
	}
	return q.sendAt
}

// find returns the position of seq in recs, or -1.
func (q *Queue) find(seq uint64) int {
	if len(q.recs) == 0 {
		return -1
	}
	// Seqs grow with position; they are contiguous except across a restart
	// that skipped numbers, so search.
	i := sort.Search(len(q.recs), func(i int) bool { return q.recs[i].seq >= seq })
	if i < len(q.recs) && q.recs[i].seq == seq {
		return i
	}
	return -1
}

// Ack removes seq once the broker acknowledged it; records leave from the
// head in order, so an out-of-order ack waits for the ones before it.
func (q *Queue) Ack(seq uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	i := q.find(seq)
	if i < 0 {
		return
	}
	q.recs[i].acked = true
	n := 0
	for n < len(q.recs) && q.recs[n].acked {
		q.bytes -= int64(q.recs[n].size)
		q.uncut += int64(q.recs[n].size)
		q.recs[n] = meta{}
		n++
	}
	if n == 0 {
		return
	}
	q.recs = q.recs[n:]
	q.first += uint64(n)
	q.sendAt = max(0, q.sendAt-n)
	q.livePos = max(0, q.livePos-n)
	q.persistAckLocked()
	if (len(q.recs) == 0 && time.Since(q.lastCut) >= truncateEvery) || q.uncut >= segmentSize {
		q.lastCut, q.uncut = time.Now(), 0
		if err := q.log.TruncateFront(q.first); err != nil {
			q.slog.Warn("outbound queue: cutting acknowledged records failed", "err", err)
		}
	}
}

// Resend schedules seq to be sent again (its publish failed).
func (q *Queue) Resend(seq uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	i := q.find(seq)
	if i < 0 || q.recs[i].acked {
		return
	}
	q.recs[i].sent = false
	q.sendAt = min(q.sendAt, i)
	q.livePos = min(q.livePos, i)
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// persistAckLocked writes the wal index of the last record that left the
// queue (acknowledged or dropped), in place; it reaches the disk with the next
// sync. A stale value only causes resends.
func (q *Queue) persistAckLocked() {
	buf := strconv.AppendUint(make([]byte, 0, 24), q.first-1, 10)
	for len(buf) < 20 {
		buf = append(buf, ' ')
	}
	_, _ = q.ackFile.WriteAt(append(buf, '\n'), 0)
}

// Stats returns the counters.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	defer q.mu.Unlock()
	s := q.stats
	s.Pending, s.Bytes = len(q.recs), q.bytes
	return s
}

// Close syncs and closes the log.
func (q *Queue) Close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil
	}
	q.closed = true
	q.syncLocked()
	_ = q.log.TruncateFront(q.first)
	err := q.log.Close()
	if cerr := q.ackFile.Close(); err == nil {
		err = cerr
	}
	return err
}

// Record encoding: crc32c(rest) u32 | seq u64 | ts unix ms i64 | topic len u16 | topic | payload.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func encode(r Record) []byte {
	b := make([]byte, 4+8+8+2, 22+len(r.Topic)+len(r.Payload))
	binary.BigEndian.PutUint64(b[4:], r.Seq)
	binary.BigEndian.PutUint64(b[12:], uint64(r.TS.UnixMilli()))
	binary.BigEndian.PutUint16(b[20:], uint16(len(r.Topic)))
	b = append(b, r.Topic...)
	b = append(b, r.Payload...)
	binary.BigEndian.PutUint32(b, crc32.Checksum(b[4:], castagnoli))
	return b
}

func decode(b []byte) (Record, error) {
	if len(b) < 22 {
		return Record{}, fmt.Errorf("record of %d bytes is too short", len(b))
	}
	if crc32.Checksum(b[4:], castagnoli) != binary.BigEndian.Uint32(b) {
		return Record{}, errors.New("record checksum mismatch")
	}
	tl := int(binary.BigEndian.Uint16(b[20:]))
	if 22+tl > len(b) {
		return Record{}, errors.New("record topic length past its end")
	}
	return Record{
		Seq:     binary.BigEndian.Uint64(b[4:]),
		TS:      time.UnixMilli(int64(binary.BigEndian.Uint64(b[12:]))),
		Topic:   string(b[22 : 22+tl]),
		Payload: b[22+tl:],
	}, nil
}

// repairTail cuts a torn entry off the newest segment of a tidwall/wal log
// (binary format: uvarint length, then data) and returns the bytes cut.
func repairTail(dir string) (int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var newest string
	for _, e := range entries {
		if len(e.Name()) == 20 && !e.IsDir() && e.Name() > newest {
			newest = e.Name()
		}
	}
	if newest == "" {
		return 0, fmt.Errorf("no segment to repair in %q", dir)
	}
	path := filepath.Join(dir, newest)
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	good := 0
	for good < len(data) {
		size, n := binary.Uvarint(data[good:])
		if n <= 0 || uint64(len(data)-good-n) < size {
			break
		}
		good += n + int(size)
	}
	if err := os.Truncate(path, int64(good)); err != nil {
		return 0, err
	}
	return len(data) - good, nil
}
