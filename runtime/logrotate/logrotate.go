// Package logrotate is a size-bounded, rotating log file writer and a reader
// of the last lines across the rotated set.
//
// Files: PATH is the live file, PATH.1 the newest rotated one, up to
// PATH.<Files>; the oldest is dropped. At most (Files+1)*MaxBytes bytes are
// kept, plus one line's overshoot at most (a write is never split).
package logrotate

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
)

// Defaults for New when MaxBytes or Files are zero.
const (
	DefaultMaxBytes = 1 << 20 // 1 MiB per file
	DefaultFiles    = 3       // rotated files kept besides the live one
)

// Writer appends to PATH and rotates it when the next write would make it
// larger than MaxBytes. It is safe for concurrent use.
type Writer struct {
	path     string
	maxBytes int64
	files    int

	mu   sync.Mutex
	f    *os.File
	size int64
}

// New opens (appending) or creates path, creating its directory. maxBytes
// (default DefaultMaxBytes) bounds each file; files (default DefaultFiles)
// is how many rotated files are kept; negative values are errors.
func New(path string, maxBytes int64, files int) (*Writer, error) {
	if path == "" {
		return nil, errors.New("log path is empty")
	}
	if maxBytes < 0 || files < 0 {
		return nil, fmt.Errorf("log %q: max bytes %d and files %d must not be negative", path, maxBytes, files)
	}
	if maxBytes == 0 {
		maxBytes = DefaultMaxBytes
	}
	if files == 0 {
		files = DefaultFiles
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("log dir for %q: %w", path, err)
	}
	w := &Writer{path: path, maxBytes: maxBytes, files: files}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *Writer) open() error {
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("open log %q: %w", w.path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat log %q: %w", w.path, err)
	}
	w.f, w.size = f, st.Size()
	return nil
}

// Write appends p whole, rotating first if p would not fit in the live file
// (unless the live file is empty: a write larger than MaxBytes gets a file
// of its own).
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return 0, fmt.Errorf("log %q is closed", w.path)
	}
	if w.size > 0 && w.size+int64(len(p)) > w.maxBytes {
		if err := w.rotate(); err != nil {
			return 0, err
		}
	}
	n, err := w.f.Write(p)
	w.size += int64(n)
	return n, err
}

// rotate shifts PATH.k to PATH.k+1 (dropping the last), PATH to PATH.1, and
// opens a fresh PATH.
func (w *Writer) rotate() error {
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("close log %q: %w", w.path, err)
	}
	w.f = nil
	_ = os.Remove(w.path + "." + strconv.Itoa(w.files))
	for k := w.files - 1; k >= 1; k-- {
		err := os.Rename(w.path+"."+strconv.Itoa(k), w.path+"."+strconv.Itoa(k+1))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rotate log %q: %w", w.path, err)
		}
	}
	if err := os.Rename(w.path, w.path+".1"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("rotate log %q: %w", w.path, err)
	}
	return w.open()
}

// Close closes the live file.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}

// LastLines returns up to n last lines (without newlines) of the live file
// and, going back, its rotated files, oldest first. A missing log is not an
// error: it has no lines. At most 64 MiB are read.
func LastLines(path string, n int) ([]string, error) {
	if n <= 0 {
		return nil, nil
	}
	var (
		lines  [][]byte
		budget int64 = 64 << 20
	)
	for k := 0; len(lines) < n && budget > 0; k++ {
		p := path
		if k > 0 {
			p = path + "." + strconv.Itoa(k)
		}
		data, err := readTail(p, budget)
		if errors.Is(err, os.ErrNotExist) {
			if k == 0 {
				continue // rotated just now, or never written
			}
			break
		}
		if err != nil {
			return nil, err
		}
		budget -= int64(len(data))
		data = bytes.TrimSuffix(data, []byte("\n"))
		if len(data) == 0 {
			continue
		}
		fl := bytes.Split(data, []byte("\n"))
		lines = append(fl, lines...)
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = string(l)
	}
	return out, nil
}

func readTail(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > max {
		if _, err := f.Seek(st.Size()-max, io.SeekStart); err != nil {
			return nil, err
		}
	}
	return io.ReadAll(io.LimitReader(f, max))
}
