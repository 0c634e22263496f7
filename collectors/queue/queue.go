// Package queue is the collectors' durable outbound queue (DESIGN.md,
// "Reliability"): every reading batch is appended here before it is
// published and leaves only when the broker acknowledged it, across broker
// outages, collector crashes and power loss. It also keeps the seq counter
// honest: a seq is sent only once it is covered by a durable reservation, so
// no seq is ever sent twice with different content, even after a power cut.
//
// Nothing in the queue's own files can stop a collector: damaged records
// are skipped and counted, an acknowledged position past the log is clamped
// and counted, and when the disk refuses appends (full, I/O errors) batches
// are kept in a bounded memory fallback — still sent — and written to disk
// again as soon as it accepts them; the queue reports itself degraded
// meanwhile.
//
// # Sending
//
// Records are sent live-first: while a backlog drains after an outage,
// records younger than LiveAge are sent before older ones, so live readings
// stay no more than a few seconds late; the backlog fills the rest of the
// window.
//
// # Storage, format version 2
//
// One directory (Config.Dir, DATA_DIR/queue for a collector), every file 0600
// and every directory 0700:
//
//	lock                  flock'd while the queue is open: one process per queue
//	segments/NNN….seg     the log: 20-digit increasing segment numbers
//	ack                   the last seq that left the queue (acknowledged or dropped)
//	reservation           the seq reservation (see "Seq numbers")
//
// A segment is a 32-byte header followed by frames, all integers big-endian:
//
//	header: "FGQUEUE\0" | version u16 (2) | flags u16 | number u64 | base seq u64 | crc32c u32 of the 28 bytes before
//	frame:  F9 51 9A C3 | body length u32 | crc32c u32 of (length, body) | body
//	body:   kind u8 (1: data) | seq u64 | poll time unix ms i64 | topic length u16 | topic | payload
//
// Appends go to the newest segment, one write(2) per Append; a segment is
// closed for appends past Config.SegmentBytes and deleted once nothing in it
// is queued. Seqs increase along the log. A reader checks every frame's
// magic, length and checksum; after damage it resynchronises on the next
// valid frame, so one bad byte loses one record, never the rest of a
// segment. Frames of an unknown kind are skipped; a segment whose header
// carries a newer version is left alone. ack and reservation are two-slot
// files (see slotFile): a torn write leaves the previous state readable.
//
// Format 1 (github.com/tidwall/wal in Dir/log, with Dir/acked and the text
// counter DATA_DIR/seq) is read once at Open, its pending records copied into
// a segment flagged "migrated", and then removed; DATA_DIR/seq is kept up to
// date in its old form so that an older collector started on the same data
// (a rolled-back update) never reuses a seq.
//
// # Seq numbers
//
// The caller numbers records (Append needs increasing seqs; LastSeq tells the
// last one used). Every seq Append accepts is covered by the reservation, a
// seq bound fsynced in the reservation file (with its boot id and the first
// seq of the run): with a periodic Sync, each sync fsyncs the log first and
// then reserves what the last period used plus a quarter (at least 16 seqs);
// an Append that would pass it extends it first, doubling the step (a queue
// fsync, rare at a steady rate). With SyncAlways every append is fsynced
// before it can be sent and nothing is reserved ahead. A record held in
// memory is sent only once a reservation marked "degraded" (the log is not
// complete) covers it.
//
// At Open: after a clean Close numbering continues without a gap; after a
// process crash in the same boot (the page cache kept every write) it
// continues after the last record in the log (never below the first seq of
// the last run); after a power cut or reboot, a torn log tail, or a stop
// while records were held in memory, it continues after the reservation,
// and Stats.Resumed names the range that may be lost: every seq up to
// AfterSeq was durably written, those after it and before NextSeq that the
// log no longer holds were lost or never used.
package queue

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Defaults of Config.
const (
	DefaultMaxBytes     = 256 << 20
	DefaultSync         = time.Second
	DefaultLiveAge      = 3 * time.Second
	DefaultSegmentBytes = 4 << 20
	DefaultMemoryBytes  = 4 << 20
	// minReserve is the least a reservation covers beyond the last seq.
	minReserve = 16
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

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("queue: closed")

// Config sets the queue's bounds and durability.
type Config struct {
	// Dir holds the log segments and the queue's state files.
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
	// Policy applies when full: DropOldest (default) or RejectNew. It also
	// applies to the memory fallback when that is full.
	Policy string
	// LiveAge: records younger than this are sent before older ones;
	// default DefaultLiveAge.
	LiveAge time.Duration
	// SegmentBytes: a segment takes no more appends past this size; default
	// DefaultSegmentBytes (4 MiB).
	SegmentBytes int64
	// MemoryBytes bounds the records kept in memory while the disk refuses
	// appends; default DefaultMemoryBytes (4 MiB).
	MemoryBytes int64
	// LegacySeqFile is the seq counter file of format 1 (a collector's
	// DATA_DIR/seq), read once as a floor and kept current for older
	// versions; empty for a queue that never had one.
	LegacySeqFile string
	// BootID identifies the running boot (default: the kernel's boot id). A
	// queue reopened under another boot id assumes the page cache was lost.
	BootID string
	// SyncObserver, when set, is called after each fsync of a queue file or
	// directory with its path and the bytes then durable (a file's size; 0
	// for a directory). Tests use it to simulate power cuts; it runs
	// synchronously and must not call the queue.
	SyncObserver func(path string, size int64)
}

// Record is one encoded batch.
type Record struct {
	Seq     uint64
	TS      time.Time // the poll time of the batch
	Topic   string
	Payload []byte
}

// Stats are the queue's counters since Open.
type Stats struct {
	Pending      int    // records not yet acknowledged
	Bytes        int64  // their size
	Dropped      uint64 // records dropped by DropOldest, MaxAge or a full memory fallback
	Rejected     uint64 // appends refused by RejectNew
	Repaired     int    // bytes of torn log tails cut off at Open
	Corrupt      uint64 // damaged records or regions skipped
	AckClamped   uint64 // acknowledged positions found past the end of the log
	AppendFailed uint64 // appends the disk refused (kept in memory while there is room)
	InMemory     int    // records held only in memory
	// Degraded says why the queue cannot keep its promise now ("" when it
	// can): the disk refuses appends or fsyncs, or the seq reservation
	// cannot be written.
	Degraded string
	// Resumed is set when Open found an unclean stop that may have lost
	// records.
	Resumed *Resume
}

// Resume describes where numbering resumed after an unclean stop.
type Resume struct {
	AfterSeq uint64 // every seq up to this one was durably written
	NextSeq  uint64 // the first seq of this run; those between may be lost
	Reason   string
}

// segment is one log file.
type segment struct {
	num    uint64
	path   string
	f      *os.File
	size   int64 // bytes written
	synced int64 // bytes known durable
	live   int   // its records still queued
	refs   int   // reads and syncs in progress
	gone   bool  // removed from disk: close once refs is 0
}

// meta is what the queue keeps in memory per record.
type meta struct {
	seq  uint64
	ts   int64    // unix ms
	seg  *segment // nil: held in memory (Queue.mem)
	off  int64
	size int32
	sent bool // handed out by Next (or left)
	left bool // acknowledged, dropped or found corrupt
}

// Reservation slot payload: flags u8 | 3 zero bytes | reserved u64 |
// durable u64 | boot id (36 bytes) | base u64 (the first seq of the run).
const (
	resSlotSize = 96
	resClean    = 1 << 0 // written by Close: reserved is the last seq used
	resDegraded = 1 << 1 // records were sent from memory: the log is not complete
	resAlways   = 1 << 2 // every append was fsynced (SyncAlways)
	ackSlotSize = 32
	segmentsDir = "segments"
	segSuffix   = ".seg"
)

// Queue is a durable FIFO of records. Create it with Open; it is safe for
// concurrent use.
type Queue struct {
	cfg    Config
	log    *slog.Logger
	segDir string
	lock   *os.File
	bootID string
	always bool

	// resMu orders reservation writes (and the syncs before them); it is
	// taken before mu.
	resMu sync.Mutex
	res   *slotFile

	mu       sync.Mutex
	segs     []*segment // in log order; the last may be active
	active   *segment   // takes appends; nil until the first after Open
	nextNum  uint64
	dirDirty bool
	recs     []meta // from the head (oldest not left) to the newest
	memStart int    // recs[memStart:] are held in memory
	mem      map[uint64][]byte
	memLive  int
	memBytes int64
	sendAt   int // recs[:sendAt] have all been sent at least once
	livePos  int // young records before livePos have been sent
	live     int
	bytes    int64
	stats    Stats
	ack      *slotFile
	ackSeq   uint64
	ackDirty bool
	ackErr   bool // an ack write failed (logged once)
	lastSeq  uint64
	// lastWritten is the newest seq written to the log; syncedSeq the newest
	// known durable there.
	lastWritten, syncedSeq uint64
	// reserved is the durable reservation: records up to it may be sent;
	// those in memory only once resDegraded says so durably too.
	reserved    uint64
	resDegraded bool
	resFlags    byte
	resN        uint64 // the current reservation step
	periodSeq   uint64 // lastSeq at the last periodic sync
	base        uint64 // the first seq of this run
	legacyUpTo  uint64 // what the legacy seq file promises
	appendErr   string
	syncErr     string
	resErr      string
	buf, flush  []byte
	// failWrites makes every log write fail (tests of the memory fallback).
	failWrites bool
	wake       chan struct{}
	done       chan struct{}
	closed     bool
}

// Open opens or creates the queue in cfg.Dir and loads what is waiting.
// Damaged content never makes it fail; it fails only when the directory
// cannot be used at all, or another process has the queue open.
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
	if cfg.SegmentBytes <= 0 {
		cfg.SegmentBytes = DefaultSegmentBytes
	}
	if cfg.MemoryBytes <= 0 {
		cfg.MemoryBytes = DefaultMemoryBytes
	}
	switch cfg.Policy {
	case "":
		cfg.Policy = DropOldest
	case DropOldest, RejectNew:
	default:
		return nil, fmt.Errorf("queue: unknown policy %q (valid: %s, %s)", cfg.Policy, DropOldest, RejectNew)
	}
	if cfg.Dir == "" {
		return nil, errors.New("queue: no directory")
	}
	q := &Queue{
		cfg: cfg, log: log, segDir: filepath.Join(cfg.Dir, segmentsDir),
		always: cfg.Sync < 0, bootID: cfg.BootID, nextNum: 1, resN: minReserve,
		mem: map[uint64][]byte{}, wake: make(chan struct{}, 1), done: make(chan struct{}),
	}
	if q.bootID == "" {
		q.bootID = currentBootID()
	}
	for _, d := range []string{cfg.Dir, q.segDir} {
		if err := MkdirPrivate(d); err != nil {
			return nil, fmt.Errorf("queue: %w", err)
		}
	}
	lock, err := os.OpenFile(filepath.Join(cfg.Dir, "lock"), os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("queue: %q is in use by another process: %w", cfg.Dir, err)
	}
	_ = lock.Chmod(0o600)
	q.lock = lock
	if err := q.load(); err != nil {
		q.closeFiles()
		return nil, err
	}
	return q, nil
}

// MkdirPrivate creates dir (and its parents) 0700, and takes group and other
// permissions away from it if it existed.
func MkdirPrivate(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, fi.Mode().Perm()&0o700); err != nil && !errors.Is(err, os.ErrPermission) {
			return err
		}
	}
	return nil
}

const bootIDPath = "/proc/sys/kernel/random/boot_id"

func currentBootID() string {
	b, err := readSmall(bootIDPath, 64)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// resState is a decoded reservation slot.
type resState struct {
	flags                   byte
	reserved, durable, base uint64
	boot                    string
}

func decodeRes(p []byte) resState {
	return resState{
		flags:    p[0],
		reserved: binary.BigEndian.Uint64(p[4:]),
		durable:  binary.BigEndian.Uint64(p[12:]),
		boot:     strings.TrimRight(string(p[20:56]), "\x00"),
		base:     binary.BigEndian.Uint64(p[56:]),
	}
}

// load reads the state files and the log, decides where numbering resumes,
// and makes that durable before anything can be appended.
func (q *Queue) load() error {
	var err error
	var ackPayload, resPayload []byte
	var ackExisted bool
	q.ack, ackPayload, ackExisted, err = openSlots(filepath.Join(q.cfg.Dir, "ack"), "FGQA", ackSlotSize)
	if err != nil {
		// Acknowledgements then live in memory: a restart resends.
		q.log.Error("outbound queue: acknowledged position file unusable; acknowledged batches will be resent after a restart", "err", err)
	}
	if ackPayload != nil {
		q.ackSeq = binary.BigEndian.Uint64(ackPayload)
	}
	q.res, resPayload, _, err = openSlots(filepath.Join(q.cfg.Dir, "reservation"), "FGQR", resSlotSize)
	if err != nil {
		q.log.Error("outbound queue: seq reservation file unusable", "err", err)
	}
	// The state files' names must survive a power cut too.
	if err := syncDir(q.cfg.Dir); err != nil {
		q.log.Warn("outbound queue: directory not synced", "dir", q.cfg.Dir, "err", err)
	}
	var rs resState
	resValid := resPayload != nil
	if resValid {
		rs = decodeRes(resPayload)
	}

	// The log: the segments, then what format 1 holds beyond them.
	dLog, torn, history, err := q.loadSegments()
	if err != nil {
		return err
	}
	legacy := q.migrate(dLog)
	dLog = max(dLog, legacy.lastSeq)
	if q.ackSeq > dLog && ackExisted {
		q.stats.AckClamped++
		q.log.Warn("outbound queue: acknowledged position past the end of the log (it reached the disk before the log); everything in the log counts as acknowledged",
			"acked_seq", q.ackSeq, "last_seq_in_log", dLog)
	}
	history = history || q.ackSeq > 0

	// Where numbering resumes.
	floor := max(dLog, q.ackSeq)
	ls := readLegacySeq(q.cfg.LegacySeqFile, q.bootID)
	if ls.ok && !(ls.ours && resValid) {
		floor = max(floor, ls.resume)
	}
	after := max(q.ackSeq, rs.durable)
	next, reason := floor+1, ""
	switch {
	case resValid && rs.flags&resClean != 0:
		next = max(rs.reserved, floor) + 1
	case resValid && rs.flags&resDegraded != 0:
		next, reason = max(rs.reserved, floor)+1, "unclean stop while the disk was failing"
	case resValid && rs.boot != "" && rs.boot == q.bootID && !torn:
		// A process crash: the page cache kept every write. Numbering
		// goes on after the log, never below where the last run began.
		next = max(floor+1, rs.base)
	case resValid:
		next, reason = max(rs.reserved, floor)+1, "unclean stop"
		if rs.boot == q.bootID {
			reason = "unclean stop, torn log tail"
		}
		if rs.flags&resAlways != 0 {
			after = max(after, dLog) // every record was fsynced before it was sent
		}
	case history:
		next, reason = floor+1+legacySeqMargin, "seq state unreadable"
	case ls.bad != "":
		next, reason = floor+1+legacySeqMargin, "seq counter "+q.cfg.LegacySeqFile+" unreadable: "+ls.bad
	case ls.unclean && !ls.ours:
		// Format 1 stopped by a power cut: it resumes past its reservation.
		reason, after = "unclean stop", max(after, dLog)
	}
	q.lastSeq, q.periodSeq, q.base = next-1, next-1, next
	if reason != "" {
		after = min(after, next-1)
		q.stats.Resumed = &Resume{AfterSeq: after, NextSeq: next, Reason: reason}
		q.log.Warn("outbound queue: resuming after an unclean stop; seqs in between may be lost",
			"reason", reason, "after_seq", after, "next_seq", next)
	}

	// Make what was read durable, then the reservation, before any append.
	var segErr error
	for _, s := range q.segs {
		if err := fdatasync(s.f); err != nil && segErr == nil {
			segErr = err
		}
		s.synced = s.size
	}
	if err := syncDir(q.segDir); err != nil && segErr == nil {
		segErr = err
	}
	if segErr != nil {
		q.syncErr = "queue fsync: " + segErr.Error()
	}
	q.lastWritten, q.syncedSeq = dLog, dLog
	q.reserved = dLog // records in the log are safe to resend whatever happens
	target := q.lastSeq
	if !q.always {
		target += q.resN
	}
	if err := q.writeReservation(q.flagsLocked(), target, dLog); err != nil {
		q.resErr = "seq reservation: " + err.Error()
		q.log.Error("outbound queue: seq reservation not written; sending waits for it", "err", err)
	} else {
		q.reserved = target
		q.resDegraded = q.memLive > 0
	}
	q.notifySync(q.segDir, 0)
	for _, s := range q.segs {
		q.notifySync(s.path, s.size)
	}
	// Segments with nothing queued are done with.
	for _, s := range append([]*segment(nil), q.segs...) {
		if s.live == 0 {
			q.removeLocked(s)
		}
	}
	return nil
}

// migrate moves the records of a format-1 queue with seqs past the log
// (after, the highest seq the segments show) into a new segment flagged
// migrated, then removes format 1. (A crash between the two leaves nothing
// past the log, so nothing is copied twice; a format-1 log written by an
// older version after a rollback has higher seqs and is copied.) If the
// segment cannot be written the records are held in memory and the old
// files kept for the next start.
func (q *Queue) migrate(after uint64) legacyQueue {
	logDir := filepath.Join(q.cfg.Dir, legacyLogDir)
	if _, err := os.Lstat(logDir); errors.Is(err, os.ErrNotExist) {
		return legacyQueue{}
	}
	lq, err := readLegacy(q.cfg.Dir)
	if err != nil {
		q.log.Error("outbound queue: format 1 log unreadable, its batches are lost", "dir", logDir, "err", err)
		q.stats.Corrupt++
		q.removeLegacy()
		return lq
	}
	q.stats.Corrupt += uint64(lq.corrupt)
	if lq.clamped {
		q.stats.AckClamped++
		q.log.Warn("outbound queue: format 1 acknowledged position past the end of its log; its log counts as acknowledged", "dir", q.cfg.Dir)
	}
	floor := max(after, q.ackSeq)
	var recs []Record
	for _, r := range lq.records {
		if r.Seq > floor {
			recs = append(recs, r)
		}
	}
	if len(recs) == 0 {
		q.removeLegacy()
		return lq
	}
	var buf []byte
	for _, r := range recs {
		buf = appendFrame(buf, r)
	}
	s, err := q.createSegment(recs[0].Seq, flagMigrated)
	if err == nil {
		err = writeFull(s.f, buf, headerSize)
		if err == nil {
			err = fdatasync(s.f)
		}
		if err == nil {
			err = syncDir(q.segDir)
		}
		if err != nil {
			q.removeLocked(s)
		}
	}
	q.active = nil
	off := int64(headerSize)
	for _, r := range recs {
		size := int64(frameSize(r))
		m := meta{seq: r.Seq, ts: r.TS.UnixMilli(), size: int32(size)}
		if err == nil {
			m.seg, m.off = s, off
			s.live++
		} else {
			q.mem[r.Seq] = appendFrame(nil, r)
			q.memLive++
			q.memBytes += size
		}
		off += size
		q.recs = append(q.recs, m)
		q.live++
		q.bytes += size
	}
	if err != nil {
		q.log.Error("outbound queue: format 1 queue not migrated (kept for the next start); its batches are held in memory", "err", err)
		q.appendErr = "queue append: " + errText(err)
		return lq
	}
	s.size, s.synced = off, off
	q.memStart = len(q.recs)
	q.removeLegacy()
	q.log.Info("outbound queue: migrated from format 1 (tidwall/wal)", "pending", len(recs), "dir", q.cfg.Dir)
	return lq
}

func (q *Queue) removeLegacy() {
	if err := os.RemoveAll(filepath.Join(q.cfg.Dir, legacyLogDir)); err != nil {
		q.log.Warn("outbound queue: format 1 log not removed", "err", err)
	}
	_ = os.Remove(filepath.Join(q.cfg.Dir, legacyAckFile))
}

// maxSegmentRead bounds what Open reads of one segment file.
const maxSegmentRead = 1 << 30

// loadSegments scans every segment and queues the records after the
// acknowledged position. It returns the highest seq the log shows, whether
// the newest segment had a torn tail, and whether there was any log.
func (q *Queue) loadSegments() (dLog uint64, torn, history bool, err error) {
	entries, err := os.ReadDir(q.segDir)
	if err != nil {
		return 0, false, false, fmt.Errorf("queue: %w", err)
	}
	type file struct {
		num  uint64
		name string
	}
	var files []file
	for _, e := range entries {
		name := e.Name()
		num, perr := strconv.ParseUint(strings.TrimSuffix(name, segSuffix), 10, 64)
		if !strings.HasSuffix(name, segSuffix) || len(name) != 20+len(segSuffix) || perr != nil {
			continue
		}
		files = append(files, file{num, name})
		q.nextNum = max(q.nextNum, num+1)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].num < files[j].num })
	var last uint64
	for i, fl := range files {
		path := filepath.Join(q.segDir, fl.name)
		newest := i == len(files)-1
		f, err := os.OpenFile(path, os.O_RDWR|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
		if err != nil {
			q.stats.Corrupt++
			q.log.Error("outbound queue: segment unreadable, skipped", "file", path, "err", err)
			continue
		}
		fi, err := f.Stat()
		if err != nil || !fi.Mode().IsRegular() || fi.Size() > maxSegmentRead {
			f.Close()
			q.stats.Corrupt++
			q.log.Error("outbound queue: segment is not a regular file of a sane size, skipped", "file", path)
			continue
		}
		_ = f.Chmod(0o600)
		data := make([]byte, fi.Size())
		if _, err := f.ReadAt(data, 0); err != nil && len(data) > 0 {
			f.Close()
			q.stats.Corrupt++
			q.log.Error("outbound queue: segment unreadable, skipped", "file", path, "err", err)
			continue
		}
		history = true
		seg := &segment{num: fl.num, path: path, f: f, size: int64(len(data))}
		start := headerSize
		h, herr := parseHeader(data)
		switch {
		case herr == nil && h.version > formatVersion:
			f.Close()
			q.log.Warn("outbound queue: segment written by a newer version left alone", "file", path, "version", h.version)
			continue
		case herr == nil:
			if h.base > 0 {
				dLog = max(dLog, h.base-1)
			}
		case len(data) == 0:
			// Created, header not written: nothing to read.
			start = 0
		default:
			q.stats.Corrupt++
			q.log.Warn("outbound queue: segment header damaged; reading its frames", "file", path, "err", herr)
			if start = nextFrame(data, 0); start < 0 {
				start = len(data)
			}
		}
		res := scan(data, min(start, len(data)), last)
		if n := res.corrupt + res.stale; n > 0 {
			q.stats.Corrupt += uint64(n)
			q.log.Warn("outbound queue: damaged records skipped", "file", path, "regions", res.corrupt, "stale", res.stale)
		}
		if res.unknown > 0 {
			q.log.Warn("outbound queue: records of a kind this version does not know skipped", "file", path, "count", res.unknown)
		}
		if res.tail >= 0 {
			cut := int64(len(data)) - res.tail
			q.stats.Corrupt++
			if newest {
				torn = true
				q.stats.Repaired += int(cut)
				q.log.Warn("outbound queue: torn tail cut off after an unclean stop", "file", path, "bytes", cut)
			} else {
				q.log.Warn("outbound queue: damaged end of a segment cut off", "file", path, "bytes", cut)
			}
			// Cut it off, so it is found (and counted) once.
			if f.Truncate(res.tail) == nil {
				seg.size = res.tail
			}
		}
		for _, r := range res.records {
			dLog = max(dLog, r.seq)
			last = r.seq
			if r.seq <= q.ackSeq {
				continue
			}
			q.recs = append(q.recs, meta{seq: r.seq, ts: r.ts, seg: seg, off: r.off, size: r.size})
			seg.live++
			q.live++
			q.bytes += int64(r.size)
		}
		q.segs = append(q.segs, seg)
	}
	q.memStart = len(q.recs)
	return dLog, torn, history, nil
}

func (q *Queue) flagsLocked() byte {
	var f byte
	if q.memLive > 0 {
		f |= resDegraded
	}
	if q.always {
		f |= resAlways
	}
	return f
}

// writeReservation makes (flags, reserved, durable) the durable seq state;
// the legacy counter is raised first when it would fall behind.
func (q *Queue) writeReservation(flags byte, reserved, durable uint64) error {
	if q.res == nil {
		s, _, _, err := openSlots(filepath.Join(q.cfg.Dir, "reservation"), "FGQR", resSlotSize)
		if err != nil {
			return err
		}
		q.res = s
	}
	if q.cfg.LegacySeqFile != "" && (reserved > q.legacyUpTo || flags&resClean != 0) {
		upTo := reserved + legacySeqMargin
		if flags&resClean != 0 {
			upTo = reserved
		}
		if err := writeLegacySeq(q.cfg.LegacySeqFile, upTo, q.bootID, flags&resClean != 0); err != nil {
			q.log.Warn("outbound queue: format 1 seq counter not updated (matters only to an older version started on this data)", "file", q.cfg.LegacySeqFile, "err", err)
		} else {
			q.legacyUpTo = upTo
			q.notifySync(q.cfg.LegacySeqFile, 101)
		}
	}
	p := make([]byte, 64)
	p[0] = flags
	binary.BigEndian.PutUint64(p[4:], reserved)
	binary.BigEndian.PutUint64(p[12:], durable)
	copy(p[20:56], q.bootID)
	binary.BigEndian.PutUint64(p[56:], q.base)
	if err := q.res.write(p); err != nil {
		return err
	}
	if err := q.res.sync(); err != nil {
		return err
	}
	q.resFlags = flags
	q.notifySync(q.res.path, 2*resSlotSize)
	return nil
}

func (q *Queue) notifySync(path string, size int64) {
	if q.cfg.SyncObserver != nil {
		q.cfg.SyncObserver(path, size)
	}
}

// LastSeq is the last seq handed to Append, or where numbering resumes
// after Open (the next seq is LastSeq()+1).
func (q *Queue) LastSeq() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.lastSeq
}

// Append adds r at the end; r.Seq must be above LastSeq (and is used up
// whatever the outcome). When the queue is full it drops the oldest records
// (DropOldest) or returns ErrFull (RejectNew); both are counted. When the
// disk refuses the write, r is kept in memory (bounded by MemoryBytes, then
// the policy applies), the queue reports itself degraded, and Append returns
// nil: r is still sent, and written to disk with the next append that works.
func (q *Queue) Append(r Record) error {
	q.mu.Lock()
	if !q.always && r.Seq > q.reserved && !q.closed {
		// Every seq handed out must be covered by the durable reservation
		// before its batch is accepted: a power cut then never reuses it,
		// whether or not it was sent. Sized to a sync period, this is rare.
		q.mu.Unlock()
		_ = q.syncNow(r.Seq)
		q.mu.Lock()
	}
	needCover, err := q.appendLocked(r)
	recovered := q.memLive == 0 && q.resDegraded
	q.mu.Unlock()
	switch {
	case needCover:
		// Held in memory: the log does not know this seq, so the
		// reservation must say so before it can be sent.
		_ = q.syncNow(r.Seq)
	case recovered:
		// Everything held in memory is in the log now: say so at once,
		// or a crash before the next sync would skip the reservation.
		_ = q.syncNow(0)
	}
	return err
}

func (q *Queue) appendLocked(r Record) (needCover bool, err error) {
	if q.closed {
		return false, ErrClosed
	}
	if r.Seq <= q.lastSeq {
		return false, fmt.Errorf("queue: append seq %d: not after the last seq %d", r.Seq, q.lastSeq)
	}
	q.lastSeq = r.Seq
	size := int64(frameSize(r))
	if q.bytes+size > q.cfg.MaxBytes && q.cfg.Policy == RejectNew {
		q.stats.Rejected++
		return false, ErrFull
	}
	for q.bytes+size > q.cfg.MaxBytes && q.live > 0 {
		q.dropHeadLocked()
	}
	if q.cfg.MaxAge > 0 {
		cutoff := time.Now().Add(-q.cfg.MaxAge).UnixMilli()
		for q.live > 0 && q.recs[0].ts < cutoff {
			q.dropHeadLocked()
		}
	}
	q.buf = appendFrame(q.buf[:0], r)
	if err := q.writeLocked(q.buf, r.Seq, r.TS.UnixMilli()); err != nil {
		if err := q.keepInMemoryLocked(q.buf, r, err); err != nil {
			return false, err
		}
		needCover = !q.resDegraded || r.Seq > q.reserved
	}
	q.signal()
	return needCover, nil
}

func (q *Queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// writeLocked writes the records held in memory, then frame (the record
// seq, unless frame is nil), with one write(2) to the active segment.
func (q *Queue) writeLocked(frame []byte, seq uint64, ts int64) error {
	buf := frame
	var first uint64 = seq
	if q.memLive > 0 {
		buf = q.flush[:0]
		first = 0
		for i := q.memStart; i < len(q.recs); i++ {
			if m := &q.recs[i]; !m.left {
				buf = append(buf, q.mem[m.seq]...)
				if first == 0 {
					first = m.seq
				}
			}
		}
		buf = append(buf, frame...)
		q.flush = buf[:0]
	}
	if len(buf) == 0 {
		return nil
	}
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		var s *segment
		if s, err = q.activeLocked(first, len(buf)); err == nil {
			off := s.size
			if q.failWrites {
				err = syscall.EIO
			} else if err = writeFull(s.f, buf, off); err == nil && q.always {
				err = fdatasync(s.f)
			}
			if err == nil {
				q.placeLocked(s, off, len(buf)-len(frame), frame, seq, ts)
				return nil
			}
			// Undo a partial write, so the next frame follows a whole one.
			_ = s.f.Truncate(off)
		}
		// A full disk, and the active segment holds only acknowledged
		// records: a new segment frees it.
		if attempt == 0 && errors.Is(err, syscall.ENOSPC) && q.active != nil && q.active.live == 0 {
			q.retireActiveLocked()
			continue
		}
		break
	}
	return err
}

// placeLocked records a successful write at off of s: flushed bytes of the
// memory records, then frame.
func (q *Queue) placeLocked(s *segment, off int64, flushed int, frame []byte, seq uint64, ts int64) {
	pos := off
	for i := q.memStart; i < len(q.recs) && flushed > 0; i++ {
		m := &q.recs[i]
		if m.left || m.seg != nil {
			continue
		}
		m.seg, m.off = s, pos
		pos += int64(m.size)
		s.live++
		delete(q.mem, m.seq)
		q.memBytes -= int64(m.size)
		q.memLive--
		q.lastWritten = max(q.lastWritten, m.seq)
	}
	q.memStart = len(q.recs)
	s.size = pos + int64(len(frame))
	if frame != nil {
		q.recs = append(q.recs, meta{seq: seq, ts: ts, seg: s, off: pos, size: int32(len(frame))})
		q.memStart = len(q.recs)
		s.live++
		q.live++
		q.bytes += int64(len(frame))
		q.lastWritten = seq
	}
	if q.always {
		s.synced = s.size
		q.syncedSeq = q.lastWritten
		q.reserved = max(q.reserved, q.lastWritten)
		q.notifySync(s.path, s.size)
	}
	if q.appendErr != "" && q.memLive == 0 && !q.resDegraded {
		q.recoveredLocked()
	}
}

// recoveredLocked ends the degraded state of a disk that refused appends:
// everything is in the log again and the reservation says so.
func (q *Queue) recoveredLocked() {
	q.appendErr = ""
	q.log.Info("outbound queue: the disk accepts appends again; batches held in memory written")
}

// keepInMemoryLocked holds a record the disk refused.
func (q *Queue) keepInMemoryLocked(frame []byte, r Record, werr error) error {
	q.stats.AppendFailed++
	if q.appendErr == "" {
		q.log.Error("outbound queue: the disk refuses appends; keeping batches in memory and retrying", "err", werr, "memory_bytes", q.cfg.MemoryBytes)
	}
	q.appendErr = "queue append: " + errText(werr)
	size := int64(len(frame))
	if q.memBytes+size > q.cfg.MemoryBytes {
		if q.cfg.Policy == RejectNew {
			q.stats.Rejected++
			return ErrFull
		}
		for i := q.memStart; i < len(q.recs) && q.memBytes+size > q.cfg.MemoryBytes; i++ {
			if !q.recs[i].left {
				q.leaveLocked(i)
				q.stats.Dropped++
			}
		}
		q.advanceHeadLocked()
	}
	q.mem[r.Seq] = append([]byte(nil), frame...)
	q.recs = append(q.recs, meta{seq: r.Seq, ts: r.TS.UnixMilli(), size: int32(size)})
	q.live++
	q.memLive++
	q.bytes += size
	q.memBytes += size
	return nil
}

// errText is err without the path an *os.PathError names (the status shows
// the reason, not the file).
func errText(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// activeLocked returns the segment to write n bytes to, starting a new one
// (whose header says base) when there is none or it is full.
func (q *Queue) activeLocked(base uint64, n int) (*segment, error) {
	if a := q.active; a != nil && (a.size+int64(n) <= q.cfg.SegmentBytes || a.size <= headerSize) {
		return a, nil
	}
	q.retireActiveLocked()
	return q.createSegment(base, 0)
}

func (q *Queue) retireActiveLocked() {
	a := q.active
	q.active = nil
	if a != nil && a.live == 0 {
		q.removeLocked(a)
	}
}

// createSegment starts segment nextNum with a header saying base and makes
// it the active one.
func (q *Queue) createSegment(base uint64, flags uint16) (*segment, error) {
	num := q.nextNum
	q.nextNum++
	path := filepath.Join(q.segDir, fmt.Sprintf("%020d%s", num, segSuffix))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	hdr := appendHeader(make([]byte, 0, headerSize), segHeader{version: formatVersion, flags: flags, number: num, base: base})
	if err := writeFull(f, hdr, 0); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	s := &segment{num: num, path: path, f: f, size: headerSize}
	if q.always {
		if err := fdatasync(f); err != nil {
			f.Close()
			os.Remove(path)
			return nil, err
		}
		if err := syncDir(q.segDir); err != nil {
			f.Close()
			os.Remove(path)
			return nil, err
		}
		s.synced = headerSize
		q.notifySync(q.segDir, 0)
	} else {
		q.dirDirty = true
	}
	q.segs = append(q.segs, s)
	q.active = s
	return s, nil
}

// removeLocked deletes a segment nothing is queued in.
func (q *Queue) removeLocked(s *segment) {
	if s.gone {
		return
	}
	s.gone = true
	if s == q.active {
		q.active = nil
	}
	if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		q.log.Warn("outbound queue: segment not removed", "file", s.path, "err", err)
	}
	q.dirDirty = true
	for i, t := range q.segs {
		if t == s {
			q.segs = append(q.segs[:i], q.segs[i+1:]...)
			break
		}
	}
	if s.refs == 0 {
		s.f.Close()
	}
}

func (q *Queue) releaseLocked(s *segment) {
	s.refs--
	if s.gone && s.refs == 0 {
		s.f.Close()
	}
}

// leaveLocked takes record i out of the queue (acknowledged, dropped or
// corrupt); the head moves past it with advanceHeadLocked.
func (q *Queue) leaveLocked(i int) {
	m := &q.recs[i]
	if m.left {
		return
	}
	m.left, m.sent = true, true
	q.live--
	q.bytes -= int64(m.size)
	if m.seg == nil {
		delete(q.mem, m.seq)
		q.memLive--
		q.memBytes -= int64(m.size)
		return
	}
	m.seg.live--
	if m.seg.live == 0 && m.seg != q.active {
		q.removeLocked(m.seg)
	}
}

// advanceHeadLocked drops the records that left from the front and
// persists the new position.
func (q *Queue) advanceHeadLocked() {
	n := 0
	for n < len(q.recs) && q.recs[n].left {
		n++
	}
	if n == 0 {
		return
	}
	q.ackSeq = q.recs[n-1].seq
	clear(q.recs[:n])
	q.recs = q.recs[n:]
	q.memStart = max(0, q.memStart-n)
	q.sendAt = max(0, q.sendAt-n)
	q.livePos = max(0, q.livePos-n)
	q.persistAckLocked()
}

func (q *Queue) dropHeadLocked() {
	q.leaveLocked(0)
	q.stats.Dropped++
	q.advanceHeadLocked()
}

// persistAckLocked writes the acknowledged position in place; it reaches
// the disk with the next sync. A stale value only causes resends.
func (q *Queue) persistAckLocked() {
	if q.ack == nil {
		return
	}
	var p [8]byte
	binary.BigEndian.PutUint64(p[:], q.ackSeq)
	if err := q.ack.write(p[:]); err != nil {
		if !q.ackErr {
			q.log.Warn("outbound queue: acknowledged position not written; a restart resends", "err", err)
		}
		q.ackErr = true
		return
	}
	q.ackErr = false
	q.ackDirty = true
}

// Next returns the next record to send, waiting for one until ctx ends or
// the queue is closed. Unsent records younger than LiveAge go first; then
// the oldest unsent. A record that can no longer be read is skipped and
// counted as corrupt.
func (q *Queue) Next(ctx context.Context) (Record, bool) {
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return Record{}, false
		}
		i, blocked := q.pickLocked()
		if i >= 0 {
			if r, ok := q.readLocked(i); ok {
				return r, true // readLocked unlocked
			}
			continue
		}
		q.mu.Unlock()
		if blocked {
			// Records wait for the reservation to cover them: extend it now.
			if err := q.syncNow(max(1, q.LastSeq())); err == nil {
				continue
			}
			select {
			case <-time.After(time.Second):
			case <-q.done:
			case <-ctx.Done():
				return Record{}, false
			}
			continue
		}
		select {
		case <-q.wake:
		case <-q.done:
		case <-ctx.Done():
			return Record{}, false
		}
	}
}

// readLocked reads record i, unlocking q.mu; on failure it counts the record
// corrupt, takes it out, and returns with q.mu unlocked too.
func (q *Queue) readLocked(i int) (Record, bool) {
	m := &q.recs[i]
	m.sent = true
	seq, s, off, size := m.seq, m.seg, m.off, m.size
	var data []byte
	var err error
	if s == nil {
		data = q.mem[seq]
		q.mu.Unlock()
	} else {
		s.refs++
		q.mu.Unlock()
		data = make([]byte, size)
		_, err = s.f.ReadAt(data, off)
	}
	var f frame
	if err == nil {
		f, err = parseFrame(data)
	}
	if err == nil && f.seq != seq {
		err = fmt.Errorf("frame holds seq %d", f.seq)
	}
	if s != nil || err != nil {
		q.mu.Lock()
		if s != nil {
			q.releaseLocked(s)
		}
		if err != nil {
			q.stats.Corrupt++
			q.log.Error("outbound queue: record unreadable, skipped", "seq", seq, "err", err)
			if j := q.find(seq); j >= 0 {
				q.leaveLocked(j)
				q.advanceHeadLocked()
			}
		}
		q.mu.Unlock()
	}
	if err != nil {
		return Record{}, false
	}
	return f.record(), true
}

// pickLocked chooses the record to send next, or -1; blocked says unsent
// records wait for the reservation. Records are in poll time order, so the
// young ones are found by binary search; livePos and sendAt only move
// forward between resends, which keeps a pick O(log n).
func (q *Queue) pickLocked() (int, bool) {
	limit := q.sendLimitLocked()
	for q.sendAt < limit && q.recs[q.sendAt].sent {
		q.sendAt++
	}
	if q.sendAt >= limit {
		return -1, q.blockedLocked()
	}
	cutoff := time.Now().Add(-q.cfg.LiveAge).UnixMilli()
	young := sort.Search(limit, func(i int) bool { return q.recs[i].ts >= cutoff })
	for i := max(young, q.livePos, q.sendAt); i < limit; i++ {
		if !q.recs[i].sent {
			q.livePos = i + 1
			return i, false
		}
	}
	return q.sendAt, false
}

// sendLimitLocked is how many records from the head may be sent: those the
// reservation covers (records held in memory also need it to say so).
func (q *Queue) sendLimitLocked() int {
	n := len(q.recs)
	memOK := q.memLive == 0 || q.resDegraded
	if n == 0 || (q.recs[n-1].seq <= q.reserved && memOK) {
		return n
	}
	limit := sort.Search(n, func(i int) bool { return q.recs[i].seq > q.reserved })
	if !memOK {
		limit = min(limit, q.memStart)
	}
	return limit
}

// blockedLocked says whether unsent records wait for the reservation.
func (q *Queue) blockedLocked() bool {
	for i := q.sendLimitLocked(); i < len(q.recs); i++ {
		if !q.recs[i].sent {
			return true
		}
	}
	return false
}

// find returns the position of seq in recs, or -1.
func (q *Queue) find(seq uint64) int {
	i := sort.Search(len(q.recs), func(i int) bool { return q.recs[i].seq >= seq })
	if i < len(q.recs) && q.recs[i].seq == seq {
		return i
	}
	return -1
}

// Ack removes seq once the broker acknowledged it; the acknowledged
// position moves in order, so an out-of-order ack waits for the ones before
// it to be persisted.
func (q *Queue) Ack(seq uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	i := q.find(seq)
	if i < 0 || q.recs[i].left {
		return
	}
	q.leaveLocked(i)
	q.advanceHeadLocked()
}

// Resend schedules seq to be sent again (its publish failed).
func (q *Queue) Resend(seq uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	i := q.find(seq)
	if i < 0 || q.recs[i].left {
		return
	}
	q.recs[i].sent = false
	q.sendAt = min(q.sendAt, i)
	q.livePos = min(q.livePos, i)
	q.signal()
}

// RunSync fsyncs the queue at the Sync period until ctx is cancelled, so a
// quiet queue also reaches the disk within Sync, and renews the seq
// reservation from what the period used.
func (q *Queue) RunSync(ctx context.Context) error {
	period := q.cfg.Sync
	if q.always {
		period = DefaultSync // acknowledged positions and the memory fallback
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-q.done:
			return nil
		case <-t.C:
			_ = q.syncNow(0)
		}
	}
}

// Sync makes everything appended so far durable and renews the reservation
// (what RunSync does each period).
func (q *Queue) Sync() error { return q.syncNow(0) }

// syncNow fsyncs what was written, then writes the reservation. need > 0
// asks for a reservation covering seq need (and the records held in memory)
// before the period is over: the step grows instead of being sized from the
// period; need 0 is the periodic sync.
func (q *Queue) syncNow(need uint64) error {
	early := need > 0
	q.resMu.Lock()
	defer q.resMu.Unlock()
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return ErrClosed
	}
	if early && need <= q.reserved && (q.memLive == 0 || q.resDegraded) && !q.blockedLocked() {
		q.mu.Unlock()
		return nil // another sync covered it meanwhile
	}
	type job struct {
		s    *segment
		size int64
	}
	var jobs []job
	for _, s := range q.segs {
		if s.synced < s.size {
			s.refs++
			jobs = append(jobs, job{s, s.size})
		}
	}
	dir := q.dirDirty
	q.dirDirty = false
	ackDirty := q.ackDirty
	q.ackDirty = false
	written := q.lastWritten
	used := q.lastSeq - q.periodSeq
	if early {
		q.resN = max(2*q.resN, used+minReserve)
	} else {
		q.periodSeq = q.lastSeq
		q.resN = used + used/4 + minReserve
	}
	target := max(q.reserved, q.lastSeq, need)
	if !q.always {
		target = max(q.reserved, max(q.lastSeq, need)+q.resN)
	}
	flags := q.flagsLocked()
	unchanged := len(jobs) == 0 && !dir && target == q.reserved && flags == q.resFlags && written == q.syncedSeq && q.resErr == ""
	q.mu.Unlock()
	if unchanged && !ackDirty {
		return nil
	}

	var syncErr error
	for _, j := range jobs {
		if err := fdatasync(j.s.f); err != nil && syncErr == nil {
			syncErr = fmt.Errorf("%s: %w", filepath.Base(j.s.path), err)
		}
	}
	if dir {
		if err := syncDir(q.segDir); err != nil && syncErr == nil {
			syncErr = err
		}
	}
	if ackDirty && q.ack != nil {
		if err := q.ack.sync(); err == nil {
			q.notifySync(q.ack.path, 2*ackSlotSize)
		}
	}
	durable := q.syncedSeq
	if syncErr == nil {
		durable = written
	}
	var resErr error
	if !unchanged {
		resErr = q.writeReservation(flags, target, durable)
	}

	q.mu.Lock()
	for _, j := range jobs {
		if syncErr == nil {
			j.s.synced = max(j.s.synced, j.size)
		}
		q.releaseLocked(j.s)
	}
	if syncErr != nil {
		if q.syncErr == "" {
			q.log.Error("outbound queue: fsync failed", "err", syncErr)
		}
		q.syncErr = "queue fsync: " + errText(syncErr)
		q.dirDirty = q.dirDirty || dir
	} else {
		q.syncErr = ""
	}
	if resErr != nil {
		if q.resErr == "" {
			q.log.Error("outbound queue: seq reservation not written; records past it wait", "err", resErr)
		}
		q.resErr = "seq reservation: " + errText(resErr)
	} else if !unchanged {
		q.resErr = ""
		q.reserved = max(q.reserved, target)
		q.resDegraded = flags&resDegraded != 0
		q.syncedSeq = max(q.syncedSeq, durable)
		if q.appendErr != "" && !q.resDegraded && q.memLive == 0 {
			q.recoveredLocked()
		}
		q.signal()
	}
	q.mu.Unlock()
	if syncErr == nil {
		if dir {
			q.notifySync(q.segDir, 0)
		}
		for _, j := range jobs {
			q.notifySync(j.s.path, j.size)
		}
	}
	if syncErr != nil {
		return syncErr
	}
	return resErr
}

// Stats returns the counters.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	defer q.mu.Unlock()
	s := q.stats
	s.Pending, s.Bytes, s.InMemory = q.live, q.bytes, q.memLive
	for _, e := range []string{q.appendErr, q.syncErr, q.resErr} {
		if e != "" {
			s.Degraded = e
			break
		}
	}
	return s
}

// Close writes what is held in memory if the disk takes it (what it does
// not take is lost and counted as dropped), syncs, records a clean stop and
// closes the files. Next returns false afterwards.
func (q *Queue) Close() error {
	q.resMu.Lock()
	defer q.resMu.Unlock()
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil
	}
	q.closed = true
	close(q.done)
	if q.memLive > 0 {
		if err := q.writeLocked(nil, 0, 0); err != nil {
			q.stats.Dropped += uint64(q.memLive)
			q.log.Error("outbound queue: batches held in memory lost at stop: the disk still refuses them", "count", q.memLive, "err", err)
			for i := q.memStart; i < len(q.recs); i++ {
				q.leaveLocked(i)
			}
		}
	}
	var err error
	for _, s := range q.segs {
		if s.synced < s.size {
			if serr := fdatasync(s.f); serr != nil && err == nil {
				err = serr
			}
		}
	}
	if serr := syncDir(q.segDir); serr != nil && err == nil {
		err = serr
	}
	if q.ack != nil {
		if serr := q.ack.sync(); serr != nil && err == nil {
			err = serr
		}
	}
	if err == nil {
		flags := byte(resClean)
		if q.always {
			flags |= resAlways
		}
		err = q.writeReservation(flags, q.lastSeq, q.lastWritten)
	}
	q.closeFiles()
	if err != nil {
		return fmt.Errorf("queue: close: %w", err)
	}
	return nil
}

func (q *Queue) closeFiles() {
	for _, s := range q.segs {
		s.f.Close()
	}
	q.segs = nil
	if q.ack != nil {
		q.ack.close()
	}
	if q.res != nil {
		q.res.close()
	}
	if q.lock != nil {
		q.lock.Close() // releases the flock
	}
}

// writeFull writes all of b at off.
func writeFull(f *os.File, b []byte, off int64) error {
	_, err := f.WriteAt(b, off)
	return err
}

func syncDir(dir string) error {
	if simulatedDisk {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
