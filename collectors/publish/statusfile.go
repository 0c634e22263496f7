package publish

import (
	"encoding/json"
	"os"
	"path/filepath"
)

// WriteStatusFile replaces DATA_DIR/status.json (StatusFile in dir)
// atomically with fs, for outputs other than the Publisher (the Sparkplug
// edge node), so the supervisor reads every collector the same way.
func WriteStatusFile(dir string, fs FileStatus) error {
	b, err := json.Marshal(fs)
	if err != nil {
		return err
	}
	path := filepath.Join(dir, StatusFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
