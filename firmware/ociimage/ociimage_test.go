package ociimage_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/platforms"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"fieldgate/firmware/ociimage"
	"fieldgate/internal/testpeer"
)

var (
	helloOnce sync.Once
	helloBins map[string]string
	helloErr  error
	helloDir  string
)

// helloBinaries cross-compiles testdata/hello for every supported platform,
// once per test binary.
func helloBinaries(t *testing.T) map[string]string {
	t.Helper()
	helloOnce.Do(func() {
		helloDir, helloErr = os.MkdirTemp("", "fghello-")
		if helloErr != nil {
			return
		}
		helloBins = map[string]string{}
		for _, p := range ociimage.SupportedPlatforms {
			parts := strings.Split(p, "/")
			out := filepath.Join(helloDir, strings.ReplaceAll(p, "/", "_"), "hello")
			cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, "./testdata/hello")
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+parts[0], "GOARCH="+parts[1])
			if len(parts) == 3 {
				cmd.Env = append(cmd.Env, "GOARM="+strings.TrimPrefix(parts[2], "v"))
			}
			if b, err := cmd.CombinedOutput(); err != nil {
				helloErr = &buildError{p, err, string(b)}
				return
			}
			helloBins[p] = out
		}
	})
	if helloErr != nil {
		t.Fatal(helloErr)
	}
	return helloBins
}

type buildError struct {
	platform string
	err      error
	out      string
}

func (e *buildError) Error() string {
	return "build hello for " + e.platform + ": " + e.err.Error() + "\n" + e.out
}

func TestMain(m *testing.M) {
	code := m.Run()
	if helloDir != "" {
		os.RemoveAll(helloDir)
	}
	os.Exit(code)
}

func readTar(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[h.Name] = b
		}
	}
}

func TestBuildArchiveLayout(t *testing.T) {
	bins := helloBinaries(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "hello.tar")
	cfg := ociimage.Config{Name: "fieldgate/test-hello", Tags: []string{"1.2.3", "latest"}, Binaries: bins}
	res, err := ociimage.Build(cfg, out)
	if err != nil {
		t.Fatal(err)
	}
	wantNames := []string{"docker.io/fieldgate/test-hello:1.2.3", "docker.io/fieldgate/test-hello:latest"}
	if strings.Join(res.Names, " ") != strings.Join(wantNames, " ") {
		t.Errorf("names %q, want %q", res.Names, wantNames)
	}
	if len(res.Images) != 3 {
		t.Fatalf("images %+v, want 3 platforms", res.Images)
	}
	for _, im := range res.Images {
		if im.Size <= 0 || im.Size > ociimage.DefaultMaxImageBytes {
			t.Errorf("%s size %d out of range", im.Platform, im.Size)
		}
	}

	files := readTar(t, out)
	if _, ok := files["oci-layout"]; !ok {
		t.Fatalf("no oci-layout in archive; files: %v", keys(files))
	}
	var idx struct {
		Manifests []struct {
			MediaType   string
			Digest      string
			Annotations map[string]string
		}
	}
	if err := json.Unmarshal(files["index.json"], &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 2 {
		t.Fatalf("index.json has %d entries, want 2 (one per tag)", len(idx.Manifests))
	}
	for i, m := range idx.Manifests {
		if m.Digest != res.IndexDigest || m.MediaType != "application/vnd.oci.image.index.v1+json" {
			t.Errorf("entry %d: %s %s, want the multi-platform index %s", i, m.MediaType, m.Digest, res.IndexDigest)
		}
		if m.Annotations[ociimage.AnnotationImageName] != wantNames[i] {
			t.Errorf("entry %d: image name %q, want %q", i, m.Annotations[ociimage.AnnotationImageName], wantNames[i])
		}
		if want := cfg.Tags[i]; m.Annotations[ociimage.AnnotationRefName] != want {
			t.Errorf("entry %d: ref name %q, want %q", i, m.Annotations[ociimage.AnnotationRefName], want)
		}
	}
	var dm []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(files["manifest.json"], &dm); err != nil {
		t.Fatal(err)
	}
	if len(dm) != 1 || strings.Join(dm[0].RepoTags, " ") != "fieldgate/test-hello:1.2.3 fieldgate/test-hello:latest" {
		t.Fatalf("manifest.json %+v", dm)
	}
	for _, p := range append([]string{dm[0].Config}, dm[0].Layers...) {
		if _, ok := files[p]; !ok {
			t.Errorf("manifest.json names %q, absent from the archive", p)
		}
	}
	var cf struct {
		Architecture string
		Config       struct{ Entrypoint []string }
	}
	if err := json.Unmarshal(files[dm[0].Config], &cf); err != nil {
		t.Fatal(err)
	}
	if cf.Architecture != "amd64" || len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != "/hello" {
		t.Errorf("docker config %+v, want amd64 with entrypoint /hello", cf)
	}

	// The OCI view: a valid layout whose index holds the three platforms.
	layoutDir := filepath.Join(dir, "layout")
	for name, data := range files {
		p := filepath.Join(layoutDir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	lp, err := layout.FromPath(layoutDir)
	if err != nil {
		t.Fatal(err)
	}
	top, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	h, err := v1.NewHash(res.IndexDigest)
	if err != nil {
		t.Fatal(err)
	}
	idxImg, err := top.ImageIndex(h)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Index(idxImg); err != nil {
		t.Errorf("multi-platform index does not validate: %v", err)
	}
	im, err := idxImg.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var plats []string
	for _, m := range im.Manifests {
		plats = append(plats, m.Platform.String())
	}
	if strings.Join(plats, " ") != "linux/amd64 linux/arm/v7 linux/arm64" {
		t.Errorf("index platforms %q", plats)
	}

	// The Docker view: manifest.json loads as the amd64 image.
	tag, err := name.NewTag("fieldgate/test-hello:1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	dimg, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(dimg); err != nil {
		t.Errorf("docker view does not validate: %v", err)
	}
	if d, err := dimg.ConfigName(); err != nil || "blobs/sha256/"+d.Hex != dm[0].Config {
		t.Errorf("docker view config %v (%v), want %s", d, err, dm[0].Config)
	}

	// Same input, same bytes: re-imports are skipped by digest.
	out2 := filepath.Join(dir, "again.tar")
	if _, err := ociimage.Build(cfg, out2); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(out)
	b, _ := os.ReadFile(out2)
	if !bytes.Equal(a, b) {
		t.Error("two builds of the same input differ")
	}
}

func TestBuildRejects(t *testing.T) {
	bins := helloBinaries(t)
	tests := []struct {
		name string
		cfg  ociimage.Config
		want string
	}{
		{"no name", ociimage.Config{Tags: []string{"1"}, Binaries: bins}, "image name is empty"},
		{"tag in name", ociimage.Config{Name: "a/b:1", Tags: []string{"1"}, Binaries: bins}, `image name "a/b:1" must not carry a tag`},
		{"no tags", ociimage.Config{Name: "a/b", Binaries: bins}, "no tags given"},
		{"no binaries", ociimage.Config{Name: "a/b", Tags: []string{"1"}}, "no binaries given"},
		{"bad platform", ociimage.Config{Name: "a/b", Tags: []string{"1"}, Binaries: map[string]string{"linux/s390x": bins["linux/amd64"]}}, `unsupported platform "linux/s390x" (valid: linux/amd64, linux/arm64, linux/arm/v7)`},
		{"missing binary", ociimage.Config{Name: "a/b", Tags: []string{"1"}, Binaries: map[string]string{"linux/amd64": "/nonexistent/x"}}, "binary for linux/amd64"},
		{"bad tag", ociimage.Config{Name: "a/b", Tags: []string{"no spaces"}, Binaries: bins}, `tag "no spaces"`},
		{"too big", ociimage.Config{Name: "a/b", Tags: []string{"1"}, Binaries: bins, MaxImageBytes: 1000}, "over the limit of 1000 bytes"},
		{"missing file", ociimage.Config{Name: "a/b", Tags: []string{"1"}, Binaries: bins, Files: []ociimage.File{{Source: "/nonexistent/lib.so", Path: "/lib/lib.so"}}}, `file for "/lib/lib.so"`},
		{"relative file path", ociimage.Config{Name: "a/b", Tags: []string{"1"}, Binaries: bins, Files: []ociimage.File{{Source: bins["linux/amd64"], Path: "lib/x"}}}, `file path "lib/x" is not a clean absolute path`},
		{"file over entrypoint", ociimage.Config{Name: "a/b", Tags: []string{"1"}, Binaries: bins, Files: []ociimage.File{{Source: bins["linux/amd64"], Path: "/hello"}}}, `file path "/hello" given twice`},
		{"docker platform without binary", ociimage.Config{Name: "a/b", Tags: []string{"1"}, Binaries: map[string]string{"linux/arm64": bins["linux/arm64"], "linux/arm/v7": bins["linux/arm/v7"]}}, `docker platform "linux/amd64" has no binary`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "x.tar")
			_, err := ociimage.Build(tt.cfg, out)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("archive written despite the error")
			}
		})
	}
}

// TestImportIntoContainerd imports an archive into a private containerd,
// which must see both names on the multi-platform index and unpack the
// host's platform.
func TestImportIntoContainerd(t *testing.T) {
	peer := testpeer.Containerd(t)
	bins := helloBinaries(t)
	out := filepath.Join(t.TempDir(), "hello.tar")
	res, err := ociimage.Build(ociimage.Config{Name: "fieldgate/test-hello", Tags: []string{"0.1", "latest"}, Binaries: bins}, out)
	if err != nil {
		t.Fatal(err)
	}
	client, err := containerd.New(peer.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx := namespaces.WithNamespace(context.Background(), peer.Namespace)
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	imgs, err := client.Import(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, im := range imgs {
		got[im.Name] = im.Target.Digest.String()
	}
	for _, n := range []string{"docker.io/fieldgate/test-hello:0.1", "docker.io/fieldgate/test-hello:latest"} {
		if got[n] != res.IndexDigest {
			t.Errorf("image %q -> %q, want the index %s (imported: %v)", n, got[n], res.IndexDigest, got)
		}
	}
	img, err := client.GetImage(ctx, "docker.io/fieldgate/test-hello:latest")
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Unpack(ctx, peer.Snapshotter); err != nil {
		t.Fatalf("unpack for %s: %v", platforms.DefaultString(), err)
	}
	spec, err := img.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Architecture != platforms.DefaultSpec().Architecture || strings.Join(spec.Config.Entrypoint, " ") != "/hello" {
		t.Errorf("host image config: arch %q entrypoint %q", spec.Architecture, spec.Config.Entrypoint)
	}
}

func keys(m map[string][]byte) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	return k
}

// TestBuildExtraFiles: extra files land in the layer with their modes and
// parent directories, and the config carries the default command and user
// (what the lab bench's broker image needs).
func TestBuildExtraFiles(t *testing.T) {
	bins := helloBinaries(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "broker.conf")
	if err := os.WriteFile(conf, []byte("listener 1883\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "img.tar")
	_, err := ociimage.Build(ociimage.Config{
		Name: "fieldgate/x", Tags: []string{"1"}, Binaries: map[string]string{"linux/amd64": bins["linux/amd64"]},
		Files: []ociimage.File{{Source: conf, Path: "/etc/x/broker.conf"}, {Source: bins["linux/amd64"], Path: "/usr/lib/x/helper", Mode: 0o755}},
		Cmd:   []string{"-c", "/etc/x/broker.conf"}, User: "1883:1883",
	}, out)
	if err != nil {
		t.Fatal(err)
	}
	files := readTar(t, out)
	var dm []struct {
		Config string
		Layers []string
	}
	if err := json.Unmarshal(files["manifest.json"], &dm); err != nil || len(dm) != 1 || len(dm[0].Layers) != 1 {
		t.Fatalf("manifest.json: %v %s", err, files["manifest.json"])
	}
	var cf struct {
		Config struct {
			Entrypoint, Cmd []string
			User            string
		}
	}
	if err := json.Unmarshal(files[dm[0].Config], &cf); err != nil {
		t.Fatal(err)
	}
	if strings.Join(cf.Config.Entrypoint, " ") != "/hello" || strings.Join(cf.Config.Cmd, " ") != "-c /etc/x/broker.conf" || cf.Config.User != "1883:1883" {
		t.Errorf("image config %+v", cf.Config)
	}
	zr, err := gzip.NewReader(bytes.NewReader(files[dm[0].Layers[0]]))
	if err != nil {
		t.Fatal(err)
	}
	modes := map[string]int64{}
	contents := map[string]string{}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		modes[h.Name] = h.Mode
		if h.Name == "etc/x/broker.conf" {
			b, _ := io.ReadAll(tr)
			contents[h.Name] = string(b)
		}
	}
	for name, mode := range map[string]int64{"etc/x/": 0o755, "etc/x/broker.conf": 0o644, "usr/lib/x/helper": 0o755, "hello": 0o755, "tmp/": 0o1777} {
		if got, ok := modes[name]; !ok || got != mode {
			t.Errorf("layer entry %s: mode %o (present %v), want %o", name, got, ok, mode)
		}
	}
	if contents["etc/x/broker.conf"] != "listener 1883\n" {
		t.Errorf("broker.conf = %q", contents["etc/x/broker.conf"])
	}
}
