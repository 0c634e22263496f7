package update

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseManifest: any input is refused with ErrMalformed or parses into
// a manifest that encodes and parses back to the same bytes; nothing panics.
func FuzzParseManifest(f *testing.F) {
	if data, err := os.ReadFile("testdata/manifest.golden.json"); err == nil {
		f.Add(data)
	}
	f.Add([]byte(`{"format":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("refusal without ErrMalformed: %v", err)
			}
			return
		}
		out, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		m2, err := ParseManifest(out)
		if err != nil {
			t.Fatalf("re-encoded manifest refused: %v\n%s", err, out)
		}
		out2, _ := m2.Marshal()
		if !bytes.Equal(out, out2) {
			t.Fatalf("encoding not stable:\n%s\n%s", out, out2)
		}
	})
}

// FuzzBundleArchive: a bundle archive of any bytes is read or refused
// without a panic, and every entry handed on has a clean path inside the
// bundle.
func FuzzBundleArchive(f *testing.F) {
	k := newKey(f, f.TempDir(), "k")
	archive, err := os.ReadFile(packTarGz(f, makeBundle(f, k, bundleSpec{version: "1"})))
	if err == nil {
		f.Add(archive)
	}
	f.Add([]byte{0x1f, 0x8b, 0x08})
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "b.tar.gz")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		b := tarBundle(p)
		_, _ = b.readSmall(ManifestFile, maxManifestBytes)
		_ = b.walk(func(e bundleEntry) error {
			if checkPath(e.path) != nil && e.path != ManifestFile && e.path != SignatureFile {
				// Refused later as unlisted; but it must never leave the bundle.
				if filepath.IsAbs(e.path) || e.path == ".." || len(e.path) >= 3 && e.path[:3] == "../" {
					t.Fatalf("entry %q leaves the bundle", e.path)
				}
			}
			return nil
		})
	})
}
