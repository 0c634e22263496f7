package nofollow

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// ErrTooMany is wrapped when Own meets more entries than its bound.
var ErrTooMany = errors.New("too many entries")

// maxDepth bounds how deep Own descends (a container can nest directories
// as deep as it likes).
const maxDepth = 64

// Own gives the directory root to uid:gid with mode perm, and every entry
// below it to uid:gid (modes kept), the way a container's writable mount is
// handed to the user it runs as. No link is followed: links are re-owned
// themselves (lchown), directories are entered by handle with O_NOFOLLOW, and
// a regular file with more than one hard link is left alone, as it may be a
// host file linked in from elsewhere on the same file system. Entries that
// are owned already are not touched. At most maxEntries entries and 64
// levels are visited; beyond that Own stops with ErrTooMany (what it changed
// stays changed).
func Own(root string, uid, gid int, perm os.FileMode, maxEntries int) error {
	dir, err := OpenDir(root)
	if err != nil {
		return err
	}
	defer dir.Close()
	fd := int(dir.Fd())
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return &os.PathError{Op: "stat", Path: root, Err: err}
	}
	if int(st.Uid) != uid || int(st.Gid) != gid {
		if err := unix.Fchown(fd, uid, gid); err != nil {
			return &os.PathError{Op: "chown", Path: root, Err: err}
		}
	}
	if os.FileMode(st.Mode).Perm() != perm.Perm() {
		if err := unix.Fchmod(fd, uint32(perm.Perm())); err != nil {
			return &os.PathError{Op: "chmod", Path: root, Err: err}
		}
	}
	budget := maxEntries
	return ownBelow(dir, root, uid, gid, &budget, 0)
}

func ownBelow(dir *os.File, where string, uid, gid int, budget *int, depth int) error {
	if depth >= maxDepth {
		return fmt.Errorf("%s: %w: deeper than %d levels", where, ErrTooMany, maxDepth)
	}
	fd := int(dir.Fd())
	for {
		names, err := dir.Readdirnames(256)
		for _, name := range names {
			*budget--
			if *budget < 0 {
				return fmt.Errorf("%s: %w", where, ErrTooMany)
			}
			if err := ownEntry(fd, where, name, uid, gid, budget, depth); err != nil {
				return err
			}
		}
		if errors.Is(err, io.EOF) || (err == nil && len(names) == 0) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: read directory: %w", where, err)
		}
	}
}

func ownEntry(dirfd int, where, name string, uid, gid int, budget *int, depth int) error {
	p := where + "/" + name
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil // removed meanwhile
		}
		return &os.PathError{Op: "stat", Path: p, Err: err}
	}
	isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	if (int(st.Uid) != uid || int(st.Gid) != gid) && (isDir || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink == 1) {
		if err := unix.Fchownat(dirfd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil && !errors.Is(err, unix.ENOENT) {
			return &os.PathError{Op: "chown", Path: p, Err: err}
		}
	}
	if !isDir {
		return nil
	}
	sub, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			return fmt.Errorf("%s: %w (replaced by a link while being walked)", p, ErrLink)
		}
		return &os.PathError{Op: "open", Path: p, Err: err}
	}
	f := os.NewFile(uintptr(sub), p)
	defer f.Close()
	return ownBelow(f, p, uid, gid, budget, depth+1)
}
