// Package logrotate is a size-bounded, rotating log file writer and a reader
// of the last lines across the rotated set.
//
// Files: PATH is the live file, PATH.1 the newest rotated one, up to
// PATH.<Files>; the oldest is dropped. At most (Files+1)*MaxBytes bytes are
// kept, plus one line's overshoot at most (a write is never split).
//
// The writer runs as root on the host (the containerd shim's log driver), so
// it never follows a link: files are opened, rotated and removed through a
// handle on their directory (package nofollow), and a directory that others
// can write is refused outright. The readers follow no link either and bound
// what they read, so they can look into a directory a container writes.
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

	"golang.org/x/sys/unix"

	"fieldgate/internal/nofollow"
)

// Defaults for New when MaxBytes or Files are zero.
const (
	DefaultMaxBytes = 1 << 20 // 1 MiB per file
	DefaultFiles    = 3       // rotated files kept besides the live one
)

// Modes of what the writer creates: logs can carry what a collector saw of
// the plant and its errors, so they are the supervisor's (root's) alone.
const (
	dirMode  = 0o700
	fileMode = 0o600
)

// Bounds of the readers: how much they read in all, and how many rotated
// files they look for (a directory a container writes may hold any number).
const (
	readBudget = 16 << 20
	maxRotated = 64
)

// Writer appends to PATH and rotates it when the next write would make it
// larger than MaxBytes. It is safe for concurrent use.
type Writer struct {
	path     string
	name     string // base name of path
	maxBytes int64
	files    int

	mu   sync.Mutex
	dir  *os.File // path's directory: every open and rename goes through it
	f    *os.File
	size int64
}

// New opens (appending) or creates path, creating its directory (0700).
// maxBytes (default DefaultMaxBytes) bounds each file; files (default
// DefaultFiles) is how many rotated files are kept; negative values are
// errors. The directory must be owned by this process's user and writable by
// no one else, and path must be a regular file if it exists (not a link).
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
	dirPath := filepath.Dir(path)
	if err := os.MkdirAll(dirPath, dirMode); err != nil {
		return nil, fmt.Errorf("log dir for %q: %w", path, err)
	}
	dir, err := nofollow.OpenDir(dirPath)
	if err != nil {
		return nil, fmt.Errorf("log dir for %q: %w", path, err)
	}
	if err := privateDir(dir); err != nil {
		dir.Close()
		return nil, fmt.Errorf("log dir %q: %w", dirPath, err)
	}
	w := &Writer{path: path, name: filepath.Base(path), maxBytes: maxBytes, files: files, dir: dir}
	if err := w.open(); err != nil {
		dir.Close()
		return nil, err
	}
	return w, nil
}

// privateDir refuses a directory that someone else could write (a
// collector's data dir, a world-writable temp dir): they could swap the
// files the writer rotates.
func privateDir(dir *os.File) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(dir.Fd()), &st); err != nil {
		return err
	}
	if int(st.Uid) != os.Geteuid() || st.Mode&0o022 != 0 {
		return fmt.Errorf("owned by uid %d with mode %#o: a log directory must be owned by uid %d and writable by no one else, since others could plant links in it", st.Uid, st.Mode&0o7777, os.Geteuid())
	}
	return nil
}

func (w *Writer) open() error {
	f, err := nofollow.OpenAppend(w.dir, w.name, fileMode)
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
	if w.dir == nil {
		return 0, fmt.Errorf("log %q is closed", w.path)
	}
	if w.f == nil { // a rotation failed half-way: try again
		if err := w.open(); err != nil {
			return 0, err
		}
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
// opens a fresh PATH — all by name within the directory handle, so a link
// planted under any of these names is moved or dropped, never followed.
func (w *Writer) rotate() error {
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("close log %q: %w", w.path, err)
	}
	w.f = nil
	rotated := func(k int) string { return w.name + "." + strconv.Itoa(k) }
	if err := nofollow.Remove(w.dir, rotated(w.files)); err != nil {
		return fmt.Errorf("rotate log %q: %w", w.path, err)
	}
	for k := w.files - 1; k >= 1; k-- {
		if err := nofollow.Rename(w.dir, rotated(k), rotated(k+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rotate log %q: %w", w.path, err)
		}
	}
	if err := nofollow.Rename(w.dir, w.name, rotated(1)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("rotate log %q: %w", w.path, err)
	}
	return w.open()
}

// Close closes the live file.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dir == nil {
		return nil
	}
	var err error
	if w.f != nil {
		err = w.f.Close()
		w.f = nil
	}
	w.dir.Close()
	w.dir = nil
	return err
}

// LastLines returns up to n last lines (without newlines) of the live file
// path and, going back, its rotated files, oldest first. A missing log is
// not an error: it has no lines. See LastLinesBeneath for what is refused.
func LastLines(path string, n int) ([]string, error) {
	return LastLinesBeneath(filepath.Dir(path), filepath.Base(path), n)
}

// LastLinesBeneath is LastLines for the log name (a relative path such as
// "logs/collector.log") beneath the directory root, which may be one a
// container writes: no link anywhere in name is followed, and a rotated file
// that is a link, FIFO, device or directory is skipped. At most 16 MiB are
// read in all, from at most 64 rotated files.
func LastLinesBeneath(root, name string, n int) ([]string, error) {
	if n <= 0 {
		return nil, nil
	}
	dir, err := nofollow.OpenDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	var (
		lines  [][]byte
		budget int64 = readBudget
	)
	for k := 0; k <= maxRotated && len(lines) < n && budget > 0; k++ {
		p := name
		if k > 0 {
			p = name + "." + strconv.Itoa(k)
		}
		data, err := readTail(dir, p, budget)
		switch {
		case errors.Is(err, os.ErrNotExist) && k == 0:
			continue // rotated just now, or never written
		case errors.Is(err, os.ErrNotExist):
			k = maxRotated // the set ends here
			continue
		case errors.Is(err, nofollow.ErrLink), errors.Is(err, nofollow.ErrNotRegular):
			continue // planted: not a log
		case err != nil:
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

// readTail reads the last max bytes of the regular file name beneath dir.
func readTail(dir *os.File, name string, max int64) ([]byte, error) {
	f, err := nofollow.Open(dir, name)
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
