package update

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/*.golden")

func TestVersionCompare(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1", "2", -1},
		{"2", "1", 1},
		{"1.4", "1.4.0", 0},
		{"v1.10.0", "1.9.9", 1},
		{"2026.11.3", "2026.2.30", 1},
		{"0.0.12", "0.0.112", -1},
	}
	for _, tc := range tests {
		a, errA := ParseVersion(tc.a)
		b, errB := ParseVersion(tc.b)
		if errA != nil || errB != nil {
			t.Fatalf("parse %q %q: %v %v", tc.a, tc.b, errA, errB)
		}
		if got := a.Compare(b); got != tc.want {
			t.Errorf("%s vs %s = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
	for _, bad := range []string{"", "v", "1..2", "1.x", "-1", "+1", "1.2-rc1", " 1"} {
		if _, err := ParseVersion(bad); err == nil {
			t.Errorf("ParseVersion(%q) accepted", bad)
		}
	}
}

// TestManifestGolden builds the manifest of a fixed bundle: its bytes are
// what is signed, so they must not change by accident.
func TestManifestGolden(t *testing.T) {
	k := newKey(t, t.TempDir(), "k")
	dir := makeBundle(t, k, bundleSpec{version: "1.4.0"})
	got, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "manifest.golden.json")
	if *updateGolden {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("manifest differs from %s (go test -run Golden -update to accept):\n%s", golden, got)
	}
	m, err := ParseManifest(got)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Images) != 2 || m.Images[0].Archive != "images/collector-modbus.tar" ||
		m.Images[0].Name != "docker.io/fieldgate/collector-modbus:1.4.0" || m.Images[1].Name != "docker.io/fieldgate/collector-modbus:latest" {
		t.Errorf("images = %+v", m.Images)
	}
	if f, ok := m.File(BinaryFile); !ok || !f.Executable {
		t.Errorf("binary = %+v", f)
	}
}

func TestParseManifestRejects(t *testing.T) {
	good := func() string {
		return `{"format":1,"product":"fieldgate","version":"2","architecture":"linux/arm64",
"files":[{"path":"fieldgate","size":1,"sha256":"` + strings.Repeat("a", 64) + `","executable":true},
{"path":"install.sh","size":1,"sha256":"` + strings.Repeat("b", 64) + `"},
{"path":"images/c.tar","size":1,"sha256":"` + strings.Repeat("c", 64) + `"}],
"images":[{"name":"docker.io/fieldgate/collector-modbus:latest","digest":"sha256:` + strings.Repeat("d", 64) + `","archive":"images/c.tar"}]}`
	}
	if _, err := ParseManifest([]byte(good())); err != nil {
		t.Fatalf("good manifest: %v", err)
	}
	tests := []struct{ name, from, to, want string }{
		{"format", `"format":1`, `"format":2`, "format 2 is not supported"},
		{"product", `"fieldgate","version"`, `"other","version"`, `product "other"`},
		{"version", `"version":"2"`, `"version":"two"`, `invalid version "two"`},
		{"architecture", "linux/arm64", "linux/mips", `unknown architecture "linux/mips"`},
		{"unknown field", `"format":1`, `"format":1,"extra":true`, `unknown field "extra"`},
		{"path escapes", `"path":"images/c.tar"`, `"path":"../c.tar"`, `invalid file path "../c.tar"`},
		{"hidden path", `"path":"images/c.tar"`, `"path":"images/.c.tar"`, `invalid file path`},
		{"bad hash", strings.Repeat("b", 64), "B", `sha256 "B" is not`},
		{"no binary", `"path":"fieldgate"`, `"path":"other"`, `required file "fieldgate" is not listed`},
		{"image not normalised", "docker.io/fieldgate/collector-modbus:latest", "fieldgate/collector-modbus", "not a normalised reference"},
		{"image archive unlisted", `"archive":"images/c.tar"`, `"archive":"images/d.tar"`, `archive "images/d.tar" is not a listed file`},
		{"trailing data", `"images/c.tar"}]}`, `"images/c.tar"}]} {}`, "data after the JSON object"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := good()
			if !strings.Contains(src, tc.from) {
				t.Fatalf("fixture lacks %q", tc.from)
			}
			_, err := ParseManifest([]byte(strings.Replace(src, tc.from, tc.to, 1)))
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestNewManifestRefusesLinks(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, BinaryFile), "x", 0o755)
	writeFile(t, filepath.Join(dir, InstallScript), "x", 0o755)
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "passwd")); err != nil {
		t.Fatal(err)
	}
	_, err := NewManifest(dir, ManifestInfo{Version: "1", Architecture: testArch})
	if err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("err = %v", err)
	}
}
