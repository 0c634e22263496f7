package testpeer

import (
	"os/exec"
	"testing"
)

// Tmpfs mounts a tmpfs of size (e.g. "256k") on a new temporary directory
// and unmounts it when the test ends: a small disk to fill. It needs root
// (see Require).
func Tmpfs(t testing.TB, size string) string {
	t.Helper()
	Require(t, "root")
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs of %s on %s: %v: %s", size, dir, err, out)
	}
	// Registered after TempDir's removal, so it runs before it.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}
