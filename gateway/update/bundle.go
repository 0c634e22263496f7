package update

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// A bundle is read from an unpacked directory (what install.sh hands over)
// or from the .tar.gz `make firmware` writes, whose entries sit under one
// top directory. Either way only regular files are accepted; a symlink,
// hard link or device is refused, nothing is followed, and reads are
// bounded by the sizes the signed manifest gives.

// bundleEntry is one file of a bundle while it is walked.
type bundleEntry struct {
	path    string // slash path relative to the bundle's top
	regular bool
	kind    string // what it is when not regular
	size    int64
	r       io.Reader
}

type bundleSource interface {
	// readSmall returns the content of a top-level file of at most max
	// bytes; a missing file wraps os.ErrNotExist.
	readSmall(name string, max int64) ([]byte, error)
	// walk calls fn for every entry other than directories.
	walk(fn func(e bundleEntry) error) error
	// String names the bundle in messages.
	String() string
}

// openBundle picks the reader for p: a directory, or a tar archive
// (gzip-compressed or not).
func openBundle(p string) (bundleSource, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	if st.IsDir() {
		return dirBundle(p), nil
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("bundle %q is neither a directory nor a file", p)
	}
	return tarBundle(p), nil
}

// dirBundle is an unpacked bundle.
type dirBundle string

func (d dirBundle) String() string { return string(d) }

func (d dirBundle) readSmall(name string, max int64) ([]byte, error) {
	return readBounded(filepath.Join(string(d), name), max, false)
}

func (d dirBundle) walk(fn func(e bundleEntry) error) error {
	root := string(d)
	return filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if de.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if !de.Type().IsRegular() {
			return fn(bundleEntry{path: rel, kind: fileKind(de.Type())})
		}
		f, err := openNoFollow(p)
		if err != nil {
			return fmt.Errorf("bundle file %q: %w", rel, err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return err
		}
		return fn(bundleEntry{path: rel, regular: true, size: st.Size(), r: f})
	})
}

func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "a symlink"
	case m&fs.ModeDevice != 0:
		return "a device"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return "not a regular file"
}

// tarBundle is a bundle archive: .tar.gz as `make firmware` writes it, or a
// plain tar.
type tarBundle string

func (t tarBundle) String() string { return string(t) }

// each opens the archive and calls fn for every entry with its path
// relative to the single top directory. Entries outside it, absolute or
// dot-dot paths, and a path seen twice are errors.
func (t tarBundle) each(fn func(h *tar.Header, rel string, r io.Reader) error) error {
	f, err := os.Open(string(t))
	if err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	defer f.Close()
	br := bufio.NewReader(f)
	var r io.Reader = br
	if magic, _ := br.Peek(2); bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("%w: bundle %q: %v", ErrUnlisted, t, err)
		}
		defer gz.Close()
		r = gz
	}
	tr := tar.NewReader(r)
	top := ""
	seen := map[string]bool{}
	for n := 0; ; n++ {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			if top == "" {
				return fmt.Errorf("%w: bundle %q is an empty archive", ErrUnlisted, t)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: bundle %q is not a readable tar archive: %v", ErrUnlisted, t, err)
		}
		if n > 2*maxFiles {
			return fmt.Errorf("%w: bundle %q has more than %d entries", ErrUnlisted, t, 2*maxFiles)
		}
		name := strings.TrimPrefix(h.Name, "./")
		clean := path.Clean(name)
		if path.IsAbs(name) || clean == ".." || strings.HasPrefix(clean, "../") {
			return fmt.Errorf("%w: bundle entry %q leaves the bundle", ErrUnlisted, h.Name)
		}
		first, rel, _ := strings.Cut(clean, "/")
		if top == "" {
			top = first
		}
		if first != top {
			return fmt.Errorf("%w: bundle entry %q is outside the bundle's top directory %q", ErrUnlisted, h.Name, top)
		}
		if rel == "" || h.Typeflag == tar.TypeDir {
			continue
		}
		if seen[rel] {
			return fmt.Errorf("%w: bundle entry %q appears twice", ErrUnlisted, rel)
		}
		seen[rel] = true
		if err := fn(h, rel, tr); err != nil {
			return err
		}
	}
}

func (t tarBundle) readSmall(name string, max int64) ([]byte, error) {
	var data []byte
	found := false
	err := t.each(func(h *tar.Header, rel string, r io.Reader) error {
		if rel != name {
			return nil
		}
		if h.Typeflag != tar.TypeReg {
			return fmt.Errorf("%w: bundle entry %q is %s", ErrUnlisted, rel, tarKind(h.Typeflag))
		}
		if h.Size > max {
			return fmt.Errorf("%w: bundle entry %q is larger than %d bytes", ErrUnlisted, rel, max)
		}
		b, err := io.ReadAll(io.LimitReader(r, max))
		if err != nil {
			return err
		}
		data, found = b, true
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("%s: %w", name, os.ErrNotExist)
	}
	return data, nil
}

func (t tarBundle) walk(fn func(e bundleEntry) error) error {
	return t.each(func(h *tar.Header, rel string, r io.Reader) error {
		if h.Typeflag != tar.TypeReg {
			return fn(bundleEntry{path: rel, kind: tarKind(h.Typeflag)})
		}
		return fn(bundleEntry{path: rel, regular: true, size: h.Size, r: r})
	})
}

func tarKind(t byte) string {
	switch t {
	case tar.TypeSymlink:
		return "a symlink"
	case tar.TypeLink:
		return "a hard link"
	case tar.TypeChar, tar.TypeBlock:
		return "a device"
	case tar.TypeFifo:
		return "a named pipe"
	}
	return fmt.Sprintf("not a regular file (tar type %q)", t)
}
