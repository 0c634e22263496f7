// Package nofollow opens, reads and re-owns files below a directory that
// someone else may write — a collector's data dir, bind-mounted read-write
// into its container — without ever following a symbolic link planted there,
// blocking on a FIFO or device, or reading without bound.
//
// The supervisor and the containerd shim's log driver run as root on the
// host: a link a container plants where they look would let it read or write
// any host file. Every function here resolves a relative name beneath a
// directory handle with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS) (Linux
// 5.6+), or, on older kernels, component by component with O_NOFOLLOW; the
// directory itself is the caller's to trust. Only regular files are opened
// for reading or writing: the type is checked on an O_PATH handle before any
// real open, so opening a FIFO or a device node has no side effect at all.
package nofollow

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// ErrNotRegular is wrapped when a name is a directory, FIFO, socket, device
// or symbolic link where a regular file was wanted.
var ErrNotRegular = errors.New("not a regular file")

// ErrTooLarge is wrapped when a file is larger than the reader's bound.
var ErrTooLarge = errors.New("file too large")

// ErrLink is wrapped when resolving a name met a symbolic link.
var ErrLink = errors.New("symbolic link refused")

// resolveFlags keep a lookup beneath its directory and away from every link.
const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// noOpenat2 is set once the kernel has said it lacks openat2 (ENOSYS, or
// EPERM from a seccomp filter that predates it); tests set it to exercise
// the O_NOFOLLOW walk.
var noOpenat2 atomic.Bool

// checkName rejects names that could leave the directory lexically.
func checkName(name string) error {
	if name == "" || path.IsAbs(name) || path.Clean(name) != name || name == ".." || strings.HasPrefix(name, "../") {
		return fmt.Errorf("name %q: want a clean relative path below the directory", name)
	}
	return nil
}

// openat resolves name beneath dirfd with flags (O_NOFOLLOW and O_CLOEXEC
// are added) and returns the raw fd.
func openat(dirfd int, name string, flags int, mode uint32) (int, error) {
	if err := checkName(name); err != nil {
		return -1, err
	}
	flags |= unix.O_NOFOLLOW | unix.O_CLOEXEC
	if !noOpenat2.Load() {
		for {
			fd, err := unix.Openat2(dirfd, name, &unix.OpenHow{Flags: uint64(flags), Mode: uint64(mode), Resolve: resolveFlags})
			switch {
			case err == nil:
				return fd, nil
			case errors.Is(err, unix.EINTR), errors.Is(err, unix.EAGAIN):
				continue // EAGAIN: a rename raced the lookup; try again
			case errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EPERM) && !probeOpenat2():
				noOpenat2.Store(true)
				return walk(dirfd, name, flags, mode)
			case errors.Is(err, unix.ELOOP), errors.Is(err, unix.EXDEV):
				return -1, fmt.Errorf("%s: %w", name, ErrLink)
			default:
				return -1, err
			}
		}
	}
	return walk(dirfd, name, flags, mode)
}

// probeOpenat2 tells whether openat2 works at all (an EPERM may be the
// file's own permission, or a seccomp filter refusing the syscall).
func probeOpenat2() bool {
	fd, err := unix.Openat2(unix.AT_FDCWD, "/", &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC})
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

// walk is openat2's stand-in: every directory component is opened with
// O_PATH|O_DIRECTORY|O_NOFOLLOW from the previous one.
func walk(dirfd int, name string, flags int, mode uint32) (int, error) {
	parts := strings.Split(name, "/")
	cur := dirfd
	closeCur := func() {
		if cur != dirfd {
			unix.Close(cur)
		}
	}
	for _, p := range parts[:len(parts)-1] {
		next, err := unix.Openat(cur, p, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		closeCur()
		if err != nil {
			if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
				return -1, fmt.Errorf("%s: %w", name, ErrLink)
			}
			return -1, err
		}
		cur = next
	}
	fd, err := unix.Openat(cur, parts[len(parts)-1], flags, mode)
	closeCur()
	if errors.Is(err, unix.ELOOP) {
		return -1, fmt.Errorf("%s: %w", name, ErrLink)
	}
	return fd, err
}

// fileType names the type bits of a mode for errors.
func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFIFO:
		return "FIFO"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFBLK:
		return "block device"
	case unix.S_IFLNK:
		return "symbolic link"
	}
	return "file of mode " + strconv.FormatUint(uint64(mode), 8)
}

// wantRegular refuses every type but a regular file; a link found as the
// last component (O_PATH|O_NOFOLLOW opens the link itself) is ErrLink.
func wantRegular(mode uint32, name string) error {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return nil
	case unix.S_IFLNK:
		return fmt.Errorf("%s: %w", name, ErrLink)
	}
	return fmt.Errorf("%w: a %s", ErrNotRegular, fileType(mode))
}

// Open opens the regular file name beneath dir for reading. No symbolic link
// is followed (anywhere in name), and a name that is not a regular file is
// refused (ErrNotRegular) before it is opened for real: a FIFO never blocks,
// a device is never opened.
func Open(dir *os.File, name string) (*os.File, error) {
	pfd, err := openat(int(dir.Fd()), name, unix.O_PATH, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		return nil, &os.PathError{Op: "stat", Path: name, Err: err}
	}
	if err := wantRegular(st.Mode, name); err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	// Reopen the very inode the O_PATH handle points at.
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(pfd), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		// No /proc: open by name again, and make sure it is the same inode.
		fd, err = openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
		if err != nil {
			return nil, &os.PathError{Op: "open", Path: name, Err: err}
		}
	}
	var st2 unix.Stat_t
	if err := unix.Fstat(fd, &st2); err != nil || st2.Dev != st.Dev || st2.Ino != st.Ino {
		unix.Close(fd)
		return nil, &os.PathError{Op: "open", Path: name, Err: errors.New("file replaced while being opened")}
	}
	return os.NewFile(uintptr(fd), name), nil
}

// OpenAppend opens (creating with perm) the regular file name beneath dir
// for appending. No symbolic link is followed; anything but a regular file
// is refused (ErrNotRegular). A FIFO without a reader fails at once (ENXIO)
// rather than blocking.
func OpenAppend(dir *os.File, name string, perm os.FileMode) (*os.File, error) {
	fd, err := openat(int(dir.Fd()), name, unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_NONBLOCK|unix.O_NOCTTY, uint32(perm.Perm()))
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "stat", Path: name, Err: err}
	}
	if err := wantRegular(st.Mode, name); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	// Regular files ignore O_NONBLOCK; clear it anyway so writes are plain.
	if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err == nil {
		_, _ = unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags&^unix.O_NONBLOCK)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// OpenDir opens the directory path for use as the anchor of the other
// functions. The path itself is the caller's to trust (symbolic links in it
// are followed); only its last component must not be a link.
func OpenDir(p string) (*os.File, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		var st unix.Stat_t
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) && unix.Lstat(p, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			err = ErrLink
		}
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	return os.NewFile(uintptr(fd), p), nil
}

// ReadFile reads the regular file name beneath the directory root, at most
// max bytes (a larger file is ErrTooLarge, and no more than max+1 bytes are
// read). Links, FIFOs, devices and directories are refused as Open does.
func ReadFile(root, name string, max int64) ([]byte, error) {
	dir, err := OpenDir(root)
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	f, err := Open(dir, name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readBounded(f, name, max)
}

func readBounded(f *os.File, name string, max int64) ([]byte, error) {
	if st, err := f.Stat(); err == nil && st.Size() > max {
		return nil, &os.PathError{Op: "read", Path: name, Err: fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, st.Size(), max)}
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, &os.PathError{Op: "read", Path: name, Err: err}
	}
	if int64(len(data)) > max {
		return nil, &os.PathError{Op: "read", Path: name, Err: fmt.Errorf("%w: more than %d bytes", ErrTooLarge, max)}
	}
	return data, nil
}

// Rename renames oldname to newname, both directly in dir. rename(2) never
// follows a link in its last component, and the directory handle pins the
// parent, so a link planted under either name is itself renamed or replaced.
func Rename(dir *os.File, oldname, newname string) error {
	for _, n := range []string{oldname, newname} {
		if err := checkName(n); err != nil || strings.Contains(n, "/") {
			return fmt.Errorf("rename: name %q: want a plain file name", n)
		}
	}
	if err := unix.Renameat(int(dir.Fd()), oldname, int(dir.Fd()), newname); err != nil {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: err}
	}
	return nil
}

// Remove removes the file (or link, FIFO, …; not a directory) name directly
// in dir. A missing name is no error.
func Remove(dir *os.File, name string) error {
	if err := checkName(name); err != nil || strings.Contains(name, "/") {
		return fmt.Errorf("remove: name %q: want a plain file name", name)
	}
	if err := unix.Unlinkat(int(dir.Fd()), name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return &os.PathError{Op: "remove", Path: name, Err: err}
	}
	return nil
}
