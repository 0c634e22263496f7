package update

import (
	"archive/tar"
	"compress/gzip"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"aead.dev/minisign"

	"fieldgate/firmware/ociimage"
)

// testArch is the architecture test bundles are built for (the installer is
// told the same, so the tests do not depend on the host).
const testArch = "linux/amd64"

// testKey is a key pair: the public key installed in a keys directory.
type testKey struct {
	priv minisign.PrivateKey
	pub  string // the .pub file
}

// newKey makes a key pair in dir (name.key, name.pub).
func newKey(t testing.TB, dir, name string) testKey {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	keyFile, pubFile := filepath.Join(dir, name+".key"), filepath.Join(dir, name+".pub")
	if _, err := GenerateKey(keyFile, pubFile, ""); err != nil {
		t.Fatal(err)
	}
	priv, err := LoadPrivateKey(keyFile, "")
	if err != nil {
		t.Fatal(err)
	}
	return testKey{priv: priv, pub: pubFile}
}

// trust copies the key's public half into keysDir.
func trust(t testing.TB, keysDir string, k testKey) {
	t.Helper()
	data, err := os.ReadFile(k.pub)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(keysDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(keysDir, filepath.Base(k.pub)), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// bundleSpec describes a test bundle.
type bundleSpec struct {
	version string
	arch    string
	// binary is the content of the fieldgate file.
	binary string
	// image is the content of the collector image's binary: a different
	// content gives a different digest.
	image string
	// tamper changes the staged files after signing.
	tamper func(dir string)
}

// makeBundle stages a signed bundle in a new directory and returns it.
func makeBundle(t testing.TB, key testKey, spec bundleSpec) string {
	t.Helper()
	if spec.arch == "" {
		spec.arch = testArch
	}
	if spec.binary == "" {
		spec.binary = "#!/bin/sh\necho fieldgate " + spec.version + "\n"
	}
	if spec.image == "" {
		spec.image = "collector " + spec.version
	}
	dir := filepath.Join(t.TempDir(), "fieldgate-firmware-"+spec.version)
	for name, body := range map[string]string{
		BinaryFile:          spec.binary,
		InstallScript:       "#!/bin/sh\necho install\n",
		"fieldgate.service": "[Service]\n",
	} {
		mode := os.FileMode(0o644)
		if name != "fieldgate.service" {
			mode = 0o755
		}
		writeFile(t, filepath.Join(dir, name), body, mode)
	}
	bin := filepath.Join(t.TempDir(), "collector")
	writeFile(t, bin, spec.image, 0o755)
	if err := os.MkdirAll(filepath.Join(dir, ImagesDir), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := ociimage.Build(ociimage.Config{
		Name: "fieldgate/collector-modbus", Tags: []string{spec.version, "latest"},
		Binaries: map[string]string{"linux/amd64": bin},
	}, filepath.Join(dir, ImagesDir, "collector-modbus.tar")); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteManifest(dir, ManifestInfo{Version: spec.version, Architecture: spec.arch}); err != nil {
		t.Fatal(err)
	}
	if err := SignFile(filepath.Join(dir, ManifestFile), key.priv, time.Unix(1764345600, 0)); err != nil {
		t.Fatal(err)
	}
	if spec.tamper != nil {
		spec.tamper(dir)
	}
	return dir
}

func writeFile(t testing.TB, p, body string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// packTarGz packs a bundle directory the way build-bundle.sh does: under
// its base name as the top directory.
func packTarGz(t testing.TB, dir string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(dir)+".tar.gz")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz := gzip.NewWriter(f)
	tw := tar.NewWriter(gz)
	top := filepath.Base(dir)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		name := top
		if rel != "." {
			name = top + "/" + filepath.ToSlash(rel)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		h, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		h.Name = name
		if d.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if d.Type().IsRegular() {
			src, err := os.Open(p)
			if err != nil {
				return err
			}
			defer src.Close()
			_, err = io.Copy(tw, src)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}
