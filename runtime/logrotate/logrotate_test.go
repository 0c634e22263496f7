package logrotate

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
