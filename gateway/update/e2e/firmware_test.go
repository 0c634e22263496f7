package e2e

import (
	"archive/tar"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"strings"
	"testing"

	"fieldgate/firmware/ociimage"
	"fieldgate/gateway/update"
	"fieldgate/internal/testpeer"
)

// TestBuildBundleScript runs firmware/build-bundle.sh — what `make firmware`
// runs — for this host's and one foreign architecture, without FIRMWARE_KEY
// and then with a release key: the bundles hold exactly the files their
// signed manifest lists, minisign verifies the signature, fieldgate verifies
// the whole bundle, and the throw-away key is announced loudly.
func TestBuildBundleScript(t *testing.T) {
	testpeer.Require(t, "minisign")
	repo := repoRoot(t)
	work := t.TempDir()
	images := filepath.Join(work, "images")
	if err := os.MkdirAll(images, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(work, "collector")
	if err := os.WriteFile(bin, []byte("collector"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := ociimage.Build(ociimage.Config{Name: "fieldgate/collector-modbus", Tags: []string{"7.1.0", "latest"},
		Binaries: map[string]string{"linux/amd64": bin, "linux/arm64": bin}}, filepath.Join(images, "collector-modbus.tar")); err != nil {
		t.Fatal(err)
	}
	foreign := "linux/arm64"
	if goruntime.GOARCH == "arm64" {
		foreign = "linux/amd64"
	}
	platforms := update.HostArchitecture() + " " + foreign
	build := func(platforms string, env ...string) string {
		t.Helper()
		out := filepath.Join(work, "dist")
		cmd := exec.Command(filepath.Join(repo, "firmware/build-bundle.sh"), "v7.1.0")
		cmd.Env = append(os.Environ(), append([]string{"IMAGES=" + images, "OUT=" + out,
			"BUILD_DIR=" + filepath.Join(work, "build"), "PLATFORMS=" + platforms}, env...)...)
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("build-bundle.sh: %v\n%s", err, b)
		}
		return string(b)
	}

	out := build(platforms)
	if !strings.Contains(out, "THROW-AWAY") || !strings.Contains(out, "DEVELOPMENT KEY") {
		t.Errorf("no loud warning about the development key:\n%s", out)
	}
	devPub := filepath.Join(work, "dist/dev-key/fieldgate-dev.pub")
	for _, p := range strings.Fields(platforms) {
		name := "fieldgate-firmware-v7.1.0-" + strings.ReplaceAll(strings.Replace(p, "/", "-", 1), "/", "")
		archive := filepath.Join(work, "dist", name+".tar.gz")
		files := untar(t, archive, work)
		want := []string{"fieldgate", "fieldgate.service", "gateway.yaml", "images/collector-modbus.tar", "install.sh", "manifest.json", "manifest.json.minisig"}
		if strings.Join(files, " ") != strings.Join(want, " ") {
			t.Errorf("%s holds %v, want %v", name, files, want)
		}
		dir := filepath.Join(work, name)
		if b, err := exec.Command("minisign", "-V", "-p", devPub, "-m", filepath.Join(dir, "manifest.json")).CombinedOutput(); err != nil {
			t.Errorf("minisign -V %s: %v\n%s", name, err, b)
		}
		m, err := update.ParseManifest(mustRead(t, filepath.Join(dir, "manifest.json")))
		if err != nil {
			t.Fatal(err)
		}
		if m.Version != "7.1.0" || m.Release != "v7.1.0" || m.Architecture != p || len(m.Images) != 2 {
			t.Errorf("%s manifest: %+v", name, m)
		}
		if f, ok := m.File("install.sh"); !ok || !f.Executable {
			t.Errorf("%s: install.sh not listed as an executable: %+v", name, f)
		}
		keys := filepath.Join(work, "keys")
		os.MkdirAll(keys, 0o755)
		copyFile(t, devPub, filepath.Join(keys, "dev.pub"))
		inst, err := update.NewInstaller(update.NewStore(work), keys, update.WithArchitecture(p))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := inst.Verify(archive); err != nil {
			t.Errorf("fieldgate refuses %s: %v", name, err)
		}
	}

	// A release key: no warning; the bundle verifies with its public key only.
	relKey, relPub := filepath.Join(work, "release.key"), filepath.Join(work, "release.pub")
	if _, err := update.GenerateKey(relKey, relPub, ""); err != nil {
		t.Fatal(err)
	}
	out = build(update.HostArchitecture(), "FIRMWARE_KEY="+relKey)
	if strings.Contains(out, "THROW-AWAY") {
		t.Errorf("warned about a development key while signing with FIRMWARE_KEY:\n%s", out)
	}
	sig := filepath.Join(work, "build", "fieldgate-firmware-v7.1.0-"+strings.ReplaceAll(strings.Replace(update.HostArchitecture(), "/", "-", 1), "/", ""), "manifest.json")
	if b, err := exec.Command("minisign", "-V", "-p", relPub, "-m", sig).CombinedOutput(); err != nil {
		t.Errorf("minisign -V with the release key: %v\n%s", err, b)
	}
	if b, err := exec.Command("minisign", "-V", "-p", devPub, "-m", sig).CombinedOutput(); err == nil {
		t.Errorf("the development key verifies a release bundle:\n%s", b)
	}
}

// untar unpacks a bundle archive into dir and lists its files below the top
// directory, sorted.
func untar(t *testing.T, archive, dir string) []string {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var files []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, filepath.FromSlash(h.Name))
		if h.Typeflag == tar.TypeDir {
			os.MkdirAll(out, 0o755)
			continue
		}
		if h.Typeflag != tar.TypeReg {
			t.Errorf("%s: %s is not a regular file", archive, h.Name)
			continue
		}
		_, rel, _ := strings.Cut(h.Name, "/")
		files = append(files, rel)
		os.MkdirAll(filepath.Dir(out), 0o755)
		w, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode).Perm())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(w, tr); err != nil {
			t.Fatal(err)
		}
		w.Close()
	}
	sort.Strings(files)
	return files
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
