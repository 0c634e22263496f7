package publish

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// seqReserve is how far ahead of the last handed-out seq the counter file
// promises, fsynced. After a power loss the page cache (and the last value)
// may be gone; numbering then resumes past the reservation, so no seq is ever
// repeated and the gap tells subscribers data was lost.
const seqReserve = 10_000

// seqFile persists the seq counter in DATA_DIR/seq as
// "last reserved boot_id clean". The last value is rewritten in place on every
// batch (one pwrite, no fsync: exact after a process crash), the reservation is
// fsynced every seqReserve batches, and "clean" is written by Close.
type seqFile struct {
	f        *os.File
	path     string
	last     uint64
	reserved uint64
	bootID   string
	buf      []byte
}

const bootIDPath = "/proc/sys/kernel/random/boot_id"

func currentBootID() string {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// openSeq opens the counter; floor is the newest seq known to be durably
// queued, which the counter never goes below.
func openSeq(path string, floor uint64) (*seqFile, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("seq counter %q: %w", path, err)
	}
	raw := make([]byte, 128)
	n, _ := f.ReadAt(raw, 0)
	fields := strings.Fields(string(raw[:n]))
	s := &seqFile{f: f, path: path, bootID: currentBootID()}
	if len(fields) > 0 {
		if s.last, err = strconv.ParseUint(fields[0], 10, 64); err != nil {
			f.Close()
			return nil, fmt.Errorf("seq counter %q is corrupt (%q): fix or remove it", path, fields[0])
		}
	}
	if len(fields) > 1 {
		s.reserved, _ = strconv.ParseUint(fields[1], 10, 64)
	}
	clean := len(fields) > 3 && fields[3] == "clean"
	sameBoot := len(fields) > 2 && fields[2] == s.bootID
	if !clean && !sameBoot && s.reserved > s.last {
		// Stopped by a power loss or reboot: the last value may be stale.
		s.last = s.reserved
	}
	s.last = max(s.last, floor)
	s.reserved = s.last
	if err := s.write(false, true); err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

func (s *seqFile) write(clean, sync bool) error {
	s.buf = strconv.AppendUint(s.buf[:0], s.last, 10)
	s.buf = append(s.buf, ' ')
	s.buf = strconv.AppendUint(s.buf, s.reserved, 10)
	s.buf = append(s.buf, ' ')
	s.buf = append(s.buf, s.bootID...)
	if clean {
		s.buf = append(s.buf, " clean"...)
	} else {
		s.buf = append(s.buf, " running"...)
	}
	for len(s.buf) < 100 {
		s.buf = append(s.buf, ' ')
	}
	s.buf = append(s.buf, '\n')
	if _, err := s.f.WriteAt(s.buf, 0); err != nil {
		return fmt.Errorf("seq counter %q: %w", s.path, err)
	}
	if sync {
		if err := s.f.Sync(); err != nil {
			return fmt.Errorf("seq counter %q: %w", s.path, err)
		}
	}
	return nil
}

// Next returns the next seq after persisting it.
func (s *seqFile) Next() (uint64, error) {
	s.last++
	sync := false
	if s.last > s.reserved {
		s.reserved = s.last + seqReserve
		sync = true
	}
	if err := s.write(false, sync); err != nil {
		s.last--
		return 0, err
	}
	return s.last, nil
}

// Close marks a clean stop and closes the file.
func (s *seqFile) Close() error {
	err := s.write(true, true)
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	return err
}
