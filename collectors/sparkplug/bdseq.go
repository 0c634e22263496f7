package sparkplug

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// bdSeqFile keeps the birth/death sequence number in DATA_DIR/sparkplug/bdseq:
// the value of the last MQTT CONNECT, written and fsynced before the
// CONNECT goes out. The next session uses the next value (0..255, wrapping),
// so a restart — even after a kill -9 — never repeats the bdSeq of the will
// the broker may still hold.
type bdSeqFile struct {
	path string
	last int // -1: never connected
}

func openBdSeq(dir string) (*bdSeqFile, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("bdSeq directory %q: %w", dir, err)
	}
	f := &bdSeqFile{path: filepath.Join(dir, "bdseq"), last: -1}
	b, err := os.ReadFile(f.path)
	switch {
	case os.IsNotExist(err):
	case err != nil:
		return nil, fmt.Errorf("bdSeq file %q: %w", f.path, err)
	default:
		n, perr := strconv.Atoi(strings.TrimSpace(string(b)))
		if perr == nil && n >= 0 && n <= 255 {
			f.last = n
		}
		// A corrupt file restarts at 0: hosts only match a death to the
		// birth of the same session.
	}
	return f, nil
}

// next returns the bdSeq of a new MQTT session and persists it.
func (f *bdSeqFile) next() (uint64, error) {
	n := (f.last + 1) % 256
	tmp := f.path + ".tmp"
	w, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, fmt.Errorf("bdSeq file %q: %w", tmp, err)
	}
	_, err = w.WriteString(strconv.Itoa(n) + "\n")
	if err == nil {
		err = w.Sync()
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, f.path)
	}
	if err != nil {
		return 0, fmt.Errorf("bdSeq file %q: %w", f.path, err)
	}
	f.last = n
	return uint64(n), nil
}
