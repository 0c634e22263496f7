package logrotate

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRotationBoundsFilesAndKeepsLastLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "c.log")
	w, err := New(path, 100, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if _, err := fmt.Fprintf(w, "line %03d\n", i); err != nil { // 9 bytes
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + ".1", path + ".2"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > 100 {
			t.Errorf("%s is %d bytes, over 100", p, st.Size())
		}
	}
	if _, err := os.Stat(path + ".3"); !os.IsNotExist(err) {
		t.Errorf("%s.3 exists (only 2 rotated files kept): %v", path, err)
	}
	got, err := LastLines(path, 15)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := 85; i < 100; i++ {
		want = append(want, fmt.Sprintf("line %03d", i))
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("last lines\n got %q\nwant %q", got, want)
	}
	all, err := LastLines(path, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) == 0 || len(all) >= 100 || all[len(all)-1] != "line 099" {
		t.Errorf("all kept lines: %d, last %q", len(all), all[len(all)-1])
	}
}

func TestReopenAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	for _, s := range []string{"a\n", "b\n"} {
		w, err := New(path, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
		w.Close()
	}
	got, err := LastLines(path, 10)
	if err != nil || strings.Join(got, "") != "ab" {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		name     string
		path     string
		max      int64
		files    int
		wantText string
	}{
		{"empty path", "", 0, 0, "log path is empty"},
		{"negative size", "x.log", -1, 0, "must not be negative"},
		{"negative files", "x.log", 0, -2, "must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.path, tt.max, tt.files)
			if err == nil || !strings.Contains(err.Error(), tt.wantText) {
				t.Fatalf("err %v, want %q", err, tt.wantText)
			}
		})
	}
}

func TestMissingLogHasNoLines(t *testing.T) {
	got, err := LastLines(filepath.Join(t.TempDir(), "none.log"), 5)
	if err != nil || len(got) != 0 {
		t.Fatalf("got %q, %v", got, err)
	}
}

// plant makes name in dir a link to a canary (a host file), as a hostile
// container could, and returns the canary's path.
func plant(t *testing.T, dir, name string) (canary string) {
	t.Helper()
	canary = filepath.Join(t.TempDir(), "canary")
	if err := os.WriteFile(canary, []byte("CANARY\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(canary, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
	return canary
}

func TestLinkedLogIsNeverWritten(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "logs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	canary := plant(t, dir, "c.log")
	if _, err := New(filepath.Join(dir, "c.log"), 0, 0); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("New on a linked log: %v, want a refusal", err)
	}
	if b, _ := os.ReadFile(canary); string(b) != "CANARY\n" {
		t.Errorf("canary changed: %q", b)
	}
}

func TestRotationMovesPlantedLinks(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "logs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "c.log")
	w, err := New(path, 20, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// Links appear where rotation will rename and remove.
	canary := plant(t, dir, "c.log.1")
	if err := os.Symlink(canary, path+".2"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if _, err := fmt.Fprintf(w, "line %03d\n", i); err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := os.ReadFile(canary); string(b) != "CANARY\n" {
		t.Errorf("canary changed: %q", b)
	}
	got, err := LastLines(path, 100)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(strings.Join(got, "\n"), "CANARY") || got[len(got)-1] != "line 009" {
		t.Errorf("lines %q", got)
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("log dir mode %v, %v", st.Mode(), err)
	}
	if st, err := os.Lstat(path); err != nil || st.Mode().Perm() != 0o600 || !st.Mode().IsRegular() {
		t.Errorf("log file mode %v, %v", st.Mode(), err)
	}
}

func TestNewRefusesDirOthersCanWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "shared")
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o1777); err != nil {
		t.Fatal(err)
	}
	if _, err := New(filepath.Join(dir, "c.log"), 0, 0); err == nil || !strings.Contains(err.Error(), "writable by no one else") {
		t.Fatalf("New in a world-writable dir: %v", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 4242, 4242); err != nil {
		t.Fatal(err)
	}
	if _, err := New(filepath.Join(dir, "c.log"), 0, 0); err == nil || !strings.Contains(err.Error(), "owned by uid 4242") {
		t.Fatalf("New in a dir owned by another user: %v", err)
	}
}

// TestLastLinesBeneathHostileDir reads a log set in a directory a container
// controls: links (to a host file, or in a parent component), a FIFO and a
// directory in place of rotated files, and many rotated files.
func TestLastLinesBeneathHostileDir(t *testing.T) {
	root := t.TempDir()
	logs := filepath.Join(root, "logs")
	if err := os.Mkdir(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(logs, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("c.log", "live 1\nlive 2\n")
	plant(t, logs, "c.log.1")
	if err := syscall.Mkfifo(filepath.Join(logs, "c.log.2"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(logs, "c.log.3"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", filepath.Join(logs, "c.log.4")); err != nil {
		t.Fatal(err)
	}
	write("c.log.5", "old 1\n")
	for k := 6; k < 200; k++ {
		write(fmt.Sprintf("c.log.%d", k), "")
	}
	done := make(chan struct{})
	var (
		got []string
		err error
	)
	go func() { defer close(done); got, err = LastLinesBeneath(root, "logs/c.log", 100) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("LastLinesBeneath blocked")
	}
	if err != nil {
		t.Fatal(err)
	}
	if want := "old 1,live 1,live 2"; strings.Join(got, ",") != want {
		t.Errorf("lines %q, want %q", got, want)
	}

	// A link as a directory component: nothing is read through it.
	other := t.TempDir()
	if err := os.Rename(logs, filepath.Join(other, "logs")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(other, "logs"), logs); err != nil {
		t.Fatal(err)
	}
	got, err = LastLinesBeneath(root, "logs/c.log", 100)
	if len(got) != 0 {
		t.Errorf("read through a linked directory: %q, %v", got, err)
	}
}
