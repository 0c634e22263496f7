package nofollow

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// hostile builds a directory as a container could leave it, next to a
// canary file standing for any host file. It returns the directory and the
// canary's path.
func hostile(t *testing.T) (string, string) {
	t.Helper()
	base := t.TempDir()
	canary := filepath.Join(base, "canary")
	must(t, os.WriteFile(canary, []byte("CANARY\n"), 0o600))
	dir := filepath.Join(base, "data")
	must(t, os.MkdirAll(filepath.Join(dir, "sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "ok.json"), []byte(`{"state":"online"}`), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "sub", "ok.log"), []byte("line\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "big"), bytes.Repeat([]byte("x"), 4097), 0o644))
	must(t, os.Symlink(canary, filepath.Join(dir, "link")))
	must(t, os.Symlink("/dev/zero", filepath.Join(dir, "zero")))
	must(t, os.Symlink(base, filepath.Join(dir, "dirlink")))
	must(t, os.Symlink("ok.json", filepath.Join(dir, "inside-link")))
	must(t, unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644))
	must(t, unix.Mknod(filepath.Join(dir, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	return dir, canary
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// within fails the test if f does not return within 5 s (a FIFO open or
// read that blocks).
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s blocked", what)
	}
}

// bothResolvers runs f with openat2 and with the O_NOFOLLOW walk.
func bothResolvers(t *testing.T, f func(t *testing.T)) {
	t.Run("openat2", f)
	t.Run("walk", func(t *testing.T) {
		noOpenat2.Store(true)
		defer noOpenat2.Store(false)
		f(t)
	})
}

func TestReadFile(t *testing.T) {
	bothResolvers(t, func(t *testing.T) {
		dir, _ := hostile(t)
		tests := []struct {
			name string
			want string // content, or the error's text
			err  error
		}{
			{"ok.json", `{"state":"online"}`, nil},
			{"sub/ok.log", "line\n", nil},
			{"link", "", ErrLink},
			{"zero", "", ErrLink},
			{"inside-link", "", ErrLink},
			{"dirlink/canary", "", ErrLink},
			{"fifo", "", ErrNotRegular},
			{"null", "", ErrNotRegular},
			{"sub", "", ErrNotRegular},
			{"big", "", ErrTooLarge},
			{"missing", "", os.ErrNotExist},
			{"../canary", "want a clean relative path", nil},
			{"/etc/passwd", "want a clean relative path", nil},
			{"sub/../ok.json", "want a clean relative path", nil},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				var (
					got []byte
					err error
				)
				within(t, "ReadFile "+tt.name, func() { got, err = ReadFile(dir, tt.name, 4096) })
				switch {
				case tt.err != nil:
					if !errors.Is(err, tt.err) {
						t.Fatalf("err %v, want %v", err, tt.err)
					}
				case strings.HasPrefix(tt.want, "want"):
					if err == nil || !strings.Contains(err.Error(), tt.want) {
						t.Fatalf("err %v, want %q", err, tt.want)
					}
				default:
					if err != nil || string(got) != tt.want {
						t.Fatalf("got %q, %v; want %q", got, err, tt.want)
					}
				}
				if bytes.Contains(got, []byte("CANARY")) {
					t.Fatal("read the canary through a link")
				}
			})
		}
	})
}

func TestReadFileBoundExact(t *testing.T) {
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "f"), bytes.Repeat([]byte("y"), 100), 0o600))
	if got, err := ReadFile(dir, "f", 100); err != nil || len(got) != 100 {
		t.Fatalf("at the bound: %d bytes, %v", len(got), err)
	}
	if _, err := ReadFile(dir, "f", 99); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("over the bound: %v", err)
	}
}

func TestOpenAppendRenameRemove(t *testing.T) {
	bothResolvers(t, func(t *testing.T) {
		dir, canary := hostile(t)
		d, err := OpenDir(dir)
		must(t, err)
		defer d.Close()

		f, err := OpenAppend(d, "new.log", 0o600)
		must(t, err)
		_, err = f.WriteString("hello\n")
		must(t, err)
		must(t, f.Close())
		if st, err := os.Lstat(filepath.Join(dir, "new.log")); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("created log: %v, %v; want mode 0600", st.Mode(), err)
		}

		for name, want := range map[string]error{"link": ErrLink, "zero": ErrLink, "dirlink/canary": ErrLink, "null": ErrNotRegular, "sub": unix.EISDIR} {
			within(t, "OpenAppend "+name, func() {
				if f, err := OpenAppend(d, name, 0o600); !errors.Is(err, want) {
					if f != nil {
						f.Close()
					}
					t.Errorf("OpenAppend(%s): %v, want %v", name, err, want)
				}
			})
		}
		// A FIFO without a reader: refused at once, never a blocked writer.
		within(t, "OpenAppend fifo", func() {
			if _, err := OpenAppend(d, "fifo", 0o600); err == nil {
				t.Error("OpenAppend(fifo) succeeded")
			}
		})

		// Renaming a planted link moves the link, not its target.
		must(t, Rename(d, "link", "link.1"))
		if st, err := os.Lstat(filepath.Join(dir, "link.1")); err != nil || st.Mode()&os.ModeSymlink == 0 {
			t.Errorf("renamed link: %v, %v", st, err)
		}
		must(t, Remove(d, "link.1"))
		must(t, Remove(d, "missing"))
		if err := Rename(d, "../x", "y"); err == nil {
			t.Error("rename out of the directory accepted")
		}
		if b, _ := os.ReadFile(canary); string(b) != "CANARY\n" {
			t.Errorf("canary changed: %q", b)
		}
	})
}

func TestOpenDirRefusesLink(t *testing.T) {
	base := t.TempDir()
	must(t, os.Symlink("/etc", filepath.Join(base, "etc")))
	if _, err := OpenDir(filepath.Join(base, "etc")); !errors.Is(err, ErrLink) {
		t.Fatalf("OpenDir(link): %v, want ErrLink", err)
	}
}

func TestOwn(t *testing.T) {
	dir, canary := hostile(t)
	must(t, os.Link(filepath.Join(dir, "ok.json"), filepath.Join(dir, "hardlink")))
	deep := filepath.Join(dir, "a", "b", "c")
	must(t, os.MkdirAll(deep, 0o755))
	must(t, os.WriteFile(filepath.Join(deep, "seq"), []byte("1"), 0o600))
	const uid, gid = 524299, 524299

	within(t, "Own", func() { must(t, Own(dir, uid, gid, 0o700, 1000)) })

	owner := func(p string) (int, int) {
		var st unix.Stat_t
		must(t, unix.Lstat(p, &st))
		return int(st.Uid), int(st.Gid)
	}
	for _, p := range []string{dir, filepath.Join(dir, "sub", "ok.log"), filepath.Join(deep, "seq"), deep, filepath.Join(dir, "link"), filepath.Join(dir, "fifo")} {
		if u, g := owner(p); u != uid || g != gid {
			t.Errorf("%s owned by %d:%d, want %d:%d", p, u, g, uid, gid)
		}
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("root mode %v, want 0700", st.Mode().Perm())
	}
	// Not followed: the canary behind "link" and "dirlink", /dev/zero; the
	// hard-linked file is left as it was.
	for _, p := range []string{canary, filepath.Dir(canary), "/dev/zero", filepath.Join(dir, "ok.json")} {
		if u, _ := owner(p); u == uid {
			t.Errorf("%s was re-owned through a link", p)
		}
	}

	// Bounded.
	if err := Own(dir, 0, 0, 0o700, 5); !errors.Is(err, ErrTooMany) {
		t.Errorf("Own with a bound of 5: %v, want ErrTooMany", err)
	}
	// The root itself must not be a link.
	link := filepath.Join(t.TempDir(), "l")
	must(t, os.Symlink(dir, link))
	if err := Own(link, 0, 0, 0o700, 1000); !errors.Is(err, ErrLink) {
		t.Errorf("Own(link): %v, want ErrLink", err)
	}
}
