package queue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Format 1: the queue as github.com/tidwall/wal kept it, in Dir/log: files
// named by the 20-digit log index of their first entry (a ".START" or
// ".END" suffix while tidwall cut the log's front or back), each a run of
// uvarint length + entry; Dir/acked held the index of the last entry that
// left, as text. An entry was crc32c u32 | seq u64 | ts ms i64 | topic len
// u16 | topic | payload.

const legacyLogDir, legacyAckFile = "log", "acked"

// legacyQueue is what a format-1 queue holds.
type legacyQueue struct {
	records []Record // entries after the acknowledged one, in order
	lastSeq uint64   // the highest seq in the log, acknowledged or not
	corrupt int      // entries or segment tails that could not be read
	clamped bool     // acked was past the last entry
}

// readLegacy reads the format-1 queue in dir. Damage is counted, never
// fatal: an entry failing its checksum is skipped, a length running past
// the end of its file ends that file.
func readLegacy(dir string) (legacyQueue, error) {
	var lq legacyQueue
	logDir := filepath.Join(dir, legacyLogDir)
	entries, err := os.ReadDir(logDir)
	if err != nil {
		return lq, err
	}
	type file struct {
		index uint64
		name  string
		start bool
		end   bool
	}
	var files []file
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || len(name) < 20 {
			continue
		}
		index, err := strconv.ParseUint(name[:20], 10, 64)
		if err != nil || index == 0 {
			continue
		}
		switch rest := name[20:]; rest {
		case "", ".START", ".END":
			files = append(files, file{index: index, name: name, start: rest == ".START", end: rest == ".END"})
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].index < files[j].index })
	// tidwall/wal's recovery: a START file replaces everything before it,
	// an END file everything after it.
	for i := len(files) - 1; i >= 0; i-- {
		if files[i].start {
			files = files[i:]
			break
		}
	}
	for i, f := range files {
		if f.end {
			files = files[:i+1]
			break
		}
	}
	acked := readLegacyAck(filepath.Join(dir, legacyAckFile))
	var lastIndex uint64
	var pending []Record
	for fi, f := range files {
		data, err := os.ReadFile(filepath.Join(logDir, f.name))
		if err != nil {
			return lq, err
		}
		index := f.index
		for off := 0; off < len(data); index++ {
			size, n := binary.Uvarint(data[off:])
			if n <= 0 || uint64(len(data)-off-n) < size {
				if fi < len(files)-1 {
					lq.corrupt++ // damage in the middle of the log
				}
				break // a torn tail: the rest of this file is unreadable
			}
			entry := data[off+n : off+n+int(size)]
			off += n + int(size)
			lastIndex = index
			r, err := decodeLegacy(entry)
			if err != nil {
				lq.corrupt++
				continue
			}
			lq.lastSeq = max(lq.lastSeq, r.Seq)
			if index > acked && (len(pending) == 0 || r.Seq > pending[len(pending)-1].Seq) {
				r.Payload = append([]byte(nil), r.Payload...)
				pending = append(pending, r)
			}
		}
	}
	lq.records = pending
	lq.clamped = acked > lastIndex
	return lq, nil
}

func readLegacyAck(path string) uint64 {
	b, err := readSmall(path, 64)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseUint(strings.TrimRight(string(b), " \n\x00"), 10, 64)
	return n
}

func decodeLegacy(b []byte) (Record, error) {
	if len(b) < 22 {
		return Record{}, fmt.Errorf("entry of %d bytes is too short", len(b))
	}
	if crc32.Checksum(b[4:], castagnoli) != binary.BigEndian.Uint32(b) {
		return Record{}, errors.New("entry checksum mismatch")
	}
	tl := int(binary.BigEndian.Uint16(b[20:]))
	if 22+tl > len(b) {
		return Record{}, errors.New("entry topic length past its end")
	}
	return Record{
		Seq:     binary.BigEndian.Uint64(b[4:]),
		TS:      time.UnixMilli(int64(binary.BigEndian.Uint64(b[12:]))),
		Topic:   string(b[22 : 22+tl]),
		Payload: b[22+tl:],
	}, nil
}

// The seq counter of format 1 (DATA_DIR/seq, Config.LegacySeqFile) is text:
// "last reserved boot_id state" padded to 100 bytes and a newline; state is
// "running" or "clean". A collector of format 1 resumes after last, or
// after reserved when the file says running and the boot id differs. This
// version keeps writing the file (with a fifth field, legacySeqMark) so that
// an older collector started on the same data dir — a rolled-back update —
// never reuses a seq this one handed out.
const (
	legacySeqMark = "v2"
	// legacySeqMargin is how far ahead of its reservation this version
	// promises in the legacy file while running (rewritten when used up), and
	// the gap taken when no seq state can be read at all.
	legacySeqMargin = 10_000
)

type legacySeq struct {
	resume  uint64 // where format 1 would resume: the next seq is resume+1
	unclean bool   // format 1 stopped unclean under another boot
	ours    bool   // written by this version (the reservation file rules)
	ok      bool   // the file exists and was read
	bad     string // why it could not be read
}

func readLegacySeq(path, bootID string) legacySeq {
	if path == "" {
		return legacySeq{}
	}
	b, err := readSmall(path, 256)
	if errors.Is(err, os.ErrNotExist) {
		return legacySeq{}
	}
	if err != nil {
		return legacySeq{bad: err.Error()}
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return legacySeq{}
	}
	last, err := strconv.ParseUint(fields[0], 10, 64)
	if err != nil {
		return legacySeq{bad: fmt.Sprintf("%q is not a number", fields[0])}
	}
	s := legacySeq{resume: last, ok: true}
	var reserved uint64
	if len(fields) > 1 {
		reserved, _ = strconv.ParseUint(fields[1], 10, 64)
	}
	clean := len(fields) > 3 && fields[3] == "clean"
	sameBoot := len(fields) > 2 && fields[2] == bootID
	if !clean && !sameBoot {
		s.resume = max(s.resume, reserved)
		s.unclean = true
	}
	s.ours = len(fields) > 4 && fields[4] == legacySeqMark
	return s
}

// writeLegacySeq writes the format-1 counter saying last (and reserved)
// and state, and syncs it.
func writeLegacySeq(path string, last uint64, bootID string, clean bool) error {
	state := "running"
	if clean {
		state = "clean"
	}
	line := fmt.Sprintf("%d %d %s %s %s", last, last, bootID, state, legacySeqMark)
	line += strings.Repeat(" ", max(0, 100-len(line))) + "\n"
	_, statErr := os.Lstat(path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	_ = f.Chmod(0o600)
	_, err = f.WriteAt([]byte(line), 0)
	if err == nil {
		err = fdatasync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && errors.Is(statErr, os.ErrNotExist) {
		err = syncDir(filepath.Dir(path)) // a new file: its name must survive too
	}
	return err
}

// readSmall reads at most limit bytes of a regular file without following
// a symlink.
func readSmall(path string, limit int) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%q is not a regular file", path)
	}
	b := make([]byte, limit)
	n, _ := f.ReadAt(b, 0)
	return b[:n], nil
}
