package publish

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// seqFile persists the last seq handed out, so numbering continues across
// restarts. The number is rewritten in place (fixed width) on every batch:
// one pwrite, no fsync — it survives a process crash through the page cache.
type seqFile struct {
	f    *os.File
	path string
	last uint64
	buf  []byte
}

const seqWidth = 20

func openSeq(path string) (*seqFile, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("seq counter %q: %w", path, err)
	}
	raw := make([]byte, 64)
	n, _ := f.ReadAt(raw, 0)
	s := strings.TrimSpace(string(raw[:n]))
	var last uint64
	if s != "" {
		last, err = strconv.ParseUint(s, 10, 64)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("seq counter %q is corrupt (%q): fix or remove it", path, s)
		}
	}
	return &seqFile{f: f, path: path, last: last, buf: make([]byte, 0, seqWidth+1)}, nil
}

// Next returns the next seq after persisting it.
func (s *seqFile) Next() (uint64, error) {
	n := s.last + 1
	s.buf = strconv.AppendUint(s.buf[:0], n, 10)
	for len(s.buf) < seqWidth {
		s.buf = append(s.buf, ' ')
	}
	s.buf = append(s.buf, '\n')
	if _, err := s.f.WriteAt(s.buf, 0); err != nil {
		return 0, fmt.Errorf("seq counter %q: %w", s.path, err)
	}
	s.last = n
	return n, nil
}

func (s *seqFile) Close() error { return s.f.Close() }
