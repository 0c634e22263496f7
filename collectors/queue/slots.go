package queue

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"syscall"
)

// slotFile is a small state file of two fixed-size, checksummed slots
// written alternately: a torn write spoils at most the slot being written,
// and the other still holds the state before it. Slot layout:
// magic [4] | version u8 | 3 zero bytes | generation u64 | payload | crc32c u32.
// Both slots are written when the file is created, so later writes land on
// allocated blocks (they still work on a full disk).
type slotFile struct {
	f     *os.File
	path  string
	size  int // bytes per slot
	magic string
	gen   uint64 // generation of the newest slot
	buf   []byte
}

const slotOverhead = 4 + 4 + 8 + 4

// openSlots opens or creates the slot file at path and returns the payload
// of its newest valid slot (nil if none). existed says whether the file had
// content before.
func openSlots(path, magic string, size int) (s *slotFile, payload []byte, existed bool, err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, nil, false, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, false, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, false, fmt.Errorf("%q is not a regular file", path)
	}
	_ = f.Chmod(0o600)
	s = &slotFile{f: f, path: path, size: size, magic: magic, buf: make([]byte, size)}
	raw := make([]byte, 2*size)
	n, _ := f.ReadAt(raw, 0)
	existed = n > 0
	for i := 0; i < 2; i++ {
		if p, gen, ok := s.parse(raw[i*size : (i+1)*size]); ok && (payload == nil || gen > s.gen) {
			payload, s.gen = p, gen
		}
	}
	if n < 2*size {
		// Allocate both slots now (zeros are no valid slot).
		if _, err := f.WriteAt(make([]byte, 2*size-n), int64(n)); err != nil {
			f.Close()
			return nil, nil, existed, err
		}
	}
	return s, payload, existed, nil
}

func (s *slotFile) parse(b []byte) (payload []byte, gen uint64, ok bool) {
	if len(b) < s.size || string(b[:4]) != s.magic || b[4] == 0 || b[4] > formatVersion {
		return nil, 0, false
	}
	if crc32.Checksum(b[:s.size-4], castagnoli) != binary.BigEndian.Uint32(b[s.size-4:]) {
		return nil, 0, false
	}
	return b[16 : s.size-4], binary.BigEndian.Uint64(b[8:]), true
}

// write stores payload in the slot that does not hold the newest state.
// It does not sync.
func (s *slotFile) write(payload []byte) error {
	gen := s.gen + 1
	b := s.buf[:0]
	b = append(b, s.magic...)
	b = append(b, formatVersion, 0, 0, 0)
	b = binary.BigEndian.AppendUint64(b, gen)
	b = append(b, payload...)
	for len(b) < s.size-4 {
		b = append(b, 0)
	}
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	if _, err := s.f.WriteAt(b, int64(gen%2)*int64(s.size)); err != nil {
		return fmt.Errorf("write %q: %w", s.path, err)
	}
	s.gen = gen
	return nil
}

func (s *slotFile) sync() error {
	if err := fdatasync(s.f); err != nil {
		return fmt.Errorf("sync %q: %w", s.path, err)
	}
	return nil
}

func (s *slotFile) close() error { return s.f.Close() }

// simulatedDisk makes fdatasync and syncDir do nothing but their
// bookkeeping: the power-cut tests simulate what a sync made durable (from
// SyncObserver) and gain nothing from real ones but time.
var simulatedDisk bool

// fdatasync flushes f's data and what is needed to read it back (its size),
// not its timestamps.
func fdatasync(f *os.File) error {
	if simulatedDisk {
		return nil
	}
	sc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := sc.Control(func(fd uintptr) {
		for {
			serr = syscall.Fdatasync(int(fd))
			if serr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return serr
}
