package publish

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// WriteStatusFile replaces DATA_DIR/status.json (StatusFile in dir, 0600)
// atomically with fs — for the Publisher and for other outputs (the
// Sparkplug edge node), so the supervisor reads every collector the same
// way. On a full disk, where a new file cannot be created, it overwrites the
// old one in place instead (its blocks are already allocated), so the
// supervisor still sees why the collector is degraded.
func WriteStatusFile(dir string, fs FileStatus) error {
	b, err := json.Marshal(fs)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	path := filepath.Join(dir, StatusFile)
	if err := replaceFile(path, b); err != nil {
		if err2 := overwriteFile(path, b); err2 != nil {
			return err
		}
	}
	return nil
}

// replaceFile writes b to a new file and renames it over path.
func replaceFile(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	_ = f.Chmod(0o600)
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// overwriteFile writes b over the existing regular file at path.
func overwriteFile(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("%q is not a regular file", path)
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		return err
	}
	return f.Truncate(int64(len(b)))
}
