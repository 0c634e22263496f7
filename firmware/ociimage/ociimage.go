// Package ociimage builds the collector image archives: static binaries on an
// empty (scratch) base, one multi-platform OCI index per collector, written as
// a single tar that both containerd's import and `docker load` accept.
//
// The archive is an OCI image layout (oci-layout, index.json, blobs/sha256/…).
// index.json holds one descriptor per tag, each pointing at the same
// multi-platform image index and annotated with io.containerd.image.name
// (the Docker-normalised name, e.g. docker.io/fieldgate/collector-modbus:1.0)
// and org.opencontainers.image.ref.name (the tag). containerd's importer reads
// only the OCI layout when oci-layout is present, so it sees every platform.
// A Docker-style manifest.json is added for one platform (DockerPlatform,
// default linux/amd64) pointing at the same blobs, so a Docker daemon with
// the classic (graphdriver) image store can load it too; a Docker daemon using
// the containerd image store reads the OCI layout and gets every platform.
// Nothing is written twice: both views share the blobs.
package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Annotation keys written on index.json's descriptors.
const (
	AnnotationImageName = "io.containerd.image.name"
	AnnotationRefName   = "org.opencontainers.image.ref.name"
)

// DefaultMaxImageBytes is the default size limit of one platform's image
// (config + compressed layers): 15 MiB.
const DefaultMaxImageBytes = 15 << 20

// DefaultDirs are the directories created in every image: the mount points of
// the collector config and DATA_DIR, and /tmp (mode 1777). The runtime mounts
// over them; they exist so that `docker run -v` and named volumes behave.
var DefaultDirs = []string{"/etc/fieldgate", "/var/lib/fieldgate", "/tmp"}

// SupportedPlatforms are the platforms Build accepts.
var SupportedPlatforms = []string{"linux/amd64", "linux/arm64", "linux/arm/v7"}

// Config describes one collector image.
type Config struct {
	// Name is the repository, e.g. "fieldgate/collector-modbus".
	Name string
	// Tags are the tags written, e.g. ["1.4.0", "latest"]. At least one.
	Tags []string
	// Binaries maps a platform ("linux/amd64", "linux/arm64", "linux/arm/v7")
	// to the path of a static binary for it. At least one.
	Binaries map[string]string
	// Entrypoint is the binary's absolute path inside the image; default
	// "/" + the base name of the binaries (which must then all agree).
	Entrypoint string
	// Dirs are directories created in the image; nil means DefaultDirs.
	Dirs []string
	// Env is the image's default environment ("KEY=value").
	Env []string
	// Cmd is the image's default arguments to the entrypoint (Docker's CMD);
	// `docker run IMAGE args…` and compose's command: replace them.
	Cmd []string
	// User is the user the image runs as ("1883:1883", numeric so that no
	// /etc/passwd is needed); empty means root.
	User string
	// Files are extra files put into every platform's image: a broker's
	// shared libraries, a default config. Parent directories are created.
	Files []File
	// Labels are OCI config labels (org.opencontainers.image.version is
	// added from the first tag unless set).
	Labels map[string]string
	// Created is the timestamp of the configs and of every file: fixed so
	// that the same binaries give the same digests (the runtime skips
	// re-imports by digest). Zero means the Unix epoch.
	Created time.Time
	// DockerPlatform is the platform listed in manifest.json for Docker's
	// classic image store; default "linux/amd64", or the only platform.
	DockerPlatform string
	// MaxImageBytes limits each platform's image size; 0 means
	// DefaultMaxImageBytes, negative means no limit.
	MaxImageBytes int64
}

// File is one extra file of an image: the host file Source (its content,
// symlinks followed) at the absolute path Path, with Mode (0 means 0644).
type File struct {
	Source string
	Path   string
	Mode   int64
}

// PlatformImage is one platform's image in a built archive.
type PlatformImage struct {
	Platform string
	Digest   string // manifest digest
	Size     int64  // config + compressed layers, bytes
}

// Result describes a written archive.
type Result struct {
	// Names are the Docker-normalised names written, one per tag.
	Names []string
	// IndexDigest is the digest of the multi-platform index all names point at.
	IndexDigest string
	Images      []PlatformImage
	// ArchiveBytes is the size of the tar file.
	ArchiveBytes int64
}

// Build writes the archive described by cfg to out (atomically: a temporary
// file in the same directory is renamed into place).
func Build(cfg Config, out string) (Result, error) {
	if err := cfg.normalize(); err != nil {
		return Result{}, err
	}
	names := make([]reference.NamedTagged, 0, len(cfg.Tags))
	for _, tag := range cfg.Tags {
		n, err := reference.ParseNormalizedNamed(cfg.Name + ":" + tag)
		if err != nil {
			return Result{}, fmt.Errorf("image name %q with tag %q: %w", cfg.Name, tag, err)
		}
		nt, ok := n.(reference.NamedTagged)
		if !ok {
			return Result{}, fmt.Errorf("image name %q with tag %q: not a tagged name", cfg.Name, tag)
		}
		names = append(names, nt)
	}

	platforms := make([]string, 0, len(cfg.Binaries))
	for p := range cfg.Binaries {
		platforms = append(platforms, p)
	}
	sort.Strings(platforms)

	var (
		res    Result
		idx    v1.ImageIndex = mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
		images               = map[string]v1.Image{}
	)
	for _, p := range platforms {
		img, plat, err := buildImage(cfg, p, cfg.Binaries[p])
		if err != nil {
			return Result{}, err
		}
		dg, err := img.Digest()
		if err != nil {
			return Result{}, fmt.Errorf("platform %s: digest: %w", p, err)
		}
		size, err := imageSize(img)
		if err != nil {
			return Result{}, fmt.Errorf("platform %s: size: %w", p, err)
		}
		if cfg.MaxImageBytes > 0 && size > cfg.MaxImageBytes {
			return Result{}, fmt.Errorf("platform %s: image %q is %d bytes, over the limit of %d bytes", p, cfg.Name, size, cfg.MaxImageBytes)
		}
		res.Images = append(res.Images, PlatformImage{Platform: p, Digest: dg.String(), Size: size})
		images[p] = img
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: plat},
		})
	}
	idxDigest, err := idx.Digest()
	if err != nil {
		return Result{}, fmt.Errorf("index digest: %w", err)
	}
	res.IndexDigest = idxDigest.String()

	tmp, err := os.MkdirTemp(filepath.Dir(out), ".ociimage-")
	if err != nil {
		return Result{}, fmt.Errorf("output dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	lp, err := layout.Write(filepath.Join(tmp, "layout"), empty.Index)
	if err != nil {
		return Result{}, fmt.Errorf("write oci layout: %w", err)
	}
	for _, n := range names {
		res.Names = append(res.Names, n.String())
		err := lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{
			AnnotationImageName: n.String(),
			AnnotationRefName:   n.Tag(),
		}))
		if err != nil {
			return Result{}, fmt.Errorf("write oci layout: %w", err)
		}
	}

	dockerManifest, err := dockerManifestJSON(images[cfg.DockerPlatform], names)
	if err != nil {
		return Result{}, err
	}
	tmpTar := filepath.Join(tmp, "image.tar")
	if err := writeTar(tmpTar, string(lp), dockerManifest, cfg.Created); err != nil {
		return Result{}, err
	}
	if err := os.Rename(tmpTar, out); err != nil {
		return Result{}, fmt.Errorf("write %q: %w", out, err)
	}
	st, err := os.Stat(out)
	if err != nil {
		return Result{}, err
	}
	res.ArchiveBytes = st.Size()
	return res, nil
}

func (c *Config) normalize() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("image name is empty"))
	} else if strings.Contains(c.Name, ":") || strings.Contains(c.Name, "@") {
		errs = append(errs, fmt.Errorf("image name %q must not carry a tag or digest (tags are given separately)", c.Name))
	}
	if len(c.Tags) == 0 {
		errs = append(errs, errors.New("no tags given"))
	}
	if len(c.Binaries) == 0 {
		errs = append(errs, errors.New("no binaries given"))
	}
	base := ""
	for p, bin := range c.Binaries {
		if _, err := parsePlatform(p); err != nil {
			errs = append(errs, err)
		}
		st, err := os.Stat(bin)
		if err != nil {
			errs = append(errs, fmt.Errorf("binary for %s: %w", p, err))
		} else if !st.Mode().IsRegular() {
			errs = append(errs, fmt.Errorf("binary for %s: %q is not a regular file", p, bin))
		}
		if c.Entrypoint == "" {
			if base != "" && base != filepath.Base(bin) {
				errs = append(errs, fmt.Errorf("binaries have different names (%q, %q): give the entrypoint", base, filepath.Base(bin)))
			}
			base = filepath.Base(bin)
		}
	}
	if c.Entrypoint == "" && base != "" {
		c.Entrypoint = "/" + base
	}
	if !path.IsAbs(c.Entrypoint) && c.Entrypoint != "" {
		errs = append(errs, fmt.Errorf("entrypoint %q is not an absolute path", c.Entrypoint))
	}
	if c.Dirs == nil {
		c.Dirs = DefaultDirs
	}
	seen := map[string]bool{path.Clean(c.Entrypoint): true}
	for _, f := range c.Files {
		switch st, err := os.Stat(f.Source); {
		case err != nil:
			errs = append(errs, fmt.Errorf("file for %q: %w", f.Path, err))
		case !st.Mode().IsRegular():
			errs = append(errs, fmt.Errorf("file for %q: %q is not a regular file", f.Path, f.Source))
		}
		if !path.IsAbs(f.Path) || f.Path != path.Clean(f.Path) {
			errs = append(errs, fmt.Errorf("file path %q is not a clean absolute path", f.Path))
		}
		if seen[path.Clean(f.Path)] {
			errs = append(errs, fmt.Errorf("file path %q given twice (or is the entrypoint)", f.Path))
		}
		seen[path.Clean(f.Path)] = true
		if f.Mode&^0o7777 != 0 {
			errs = append(errs, fmt.Errorf("file %q: mode %o is not a permission mode", f.Path, f.Mode))
		}
	}
	for _, d := range c.Dirs {
		if !path.IsAbs(d) {
			errs = append(errs, fmt.Errorf("directory %q is not an absolute path", d))
		}
	}
	if c.Created.IsZero() {
		c.Created = time.Unix(0, 0).UTC()
	}
	if c.DockerPlatform == "" {
		c.DockerPlatform = "linux/amd64"
		if len(c.Binaries) == 1 {
			for p := range c.Binaries {
				c.DockerPlatform = p
			}
		}
	}
	if _, ok := c.Binaries[c.DockerPlatform]; !ok && len(c.Binaries) > 0 {
		errs = append(errs, fmt.Errorf("docker platform %q has no binary (given: %s)", c.DockerPlatform, strings.Join(sortedKeys(c.Binaries), ", ")))
	}
	if c.MaxImageBytes == 0 {
		c.MaxImageBytes = DefaultMaxImageBytes
	}
	return errors.Join(errs...)
}

func parsePlatform(p string) (*v1.Platform, error) {
	parts := strings.Split(p, "/")
	ok := false
	for _, s := range SupportedPlatforms {
		ok = ok || s == p
	}
	if !ok {
		return nil, fmt.Errorf("unsupported platform %q (valid: %s)", p, strings.Join(SupportedPlatforms, ", "))
	}
	plat := &v1.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		plat.Variant = parts[2]
	}
	return plat, nil
}

// buildImage makes one platform's image: a single layer with the directories
// and the binary at the entrypoint path, OCI media types throughout.
func buildImage(cfg Config, platform, binary string) (v1.Image, *v1.Platform, error) {
	plat, err := parsePlatform(platform)
	if err != nil {
		return nil, nil, err
	}
	bin, err := os.ReadFile(binary)
	if err != nil {
		return nil, nil, fmt.Errorf("binary for %s: %w", platform, err)
	}
	files := make([][]byte, len(cfg.Files))
	for i, f := range cfg.Files {
		if files[i], err = os.ReadFile(f.Source); err != nil {
			return nil, nil, fmt.Errorf("platform %s: file %q: %w", platform, f.Path, err)
		}
	}
	layerTar, err := rootfsTar(cfg, bin, files)
	if err != nil {
		return nil, nil, fmt.Errorf("platform %s: layer: %w", platform, err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithCompressionLevel(gzip.BestCompression), tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, nil, fmt.Errorf("platform %s: layer: %w", platform, err)
	}

	labels := map[string]string{}
	for k, v := range cfg.Labels {
		labels[k] = v
	}
	if _, ok := labels["org.opencontainers.image.version"]; !ok {
		labels["org.opencontainers.image.version"] = cfg.Tags[0]
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.AppendLayers(img, layer)
	if err != nil {
		return nil, nil, fmt.Errorf("platform %s: %w", platform, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, nil, err
	}
	cf = cf.DeepCopy()
	cf.OS = plat.OS
	cf.Architecture = plat.Architecture
	cf.Variant = plat.Variant
	cf.Created = v1.Time{Time: cfg.Created}
	cf.Config.Entrypoint = []string{cfg.Entrypoint}
	cf.Config.Env = append([]string(nil), cfg.Env...)
	cf.Config.Cmd = append([]string(nil), cfg.Cmd...)
	cf.Config.User = cfg.User
	cf.Config.Labels = labels
	cf.Config.WorkingDir = "/"
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, nil, fmt.Errorf("platform %s: %w", platform, err)
	}
	return img, plat, nil
}

// rootfsTar is the layer's uncompressed tar: parent directories first, then
// the binary (root-owned, 0755) and the extra files (contents in files, in
// cfg.Files order), every entry stamped with cfg.Created.
func rootfsTar(cfg Config, bin []byte, files [][]byte) ([]byte, error) {
	dirs := map[string]bool{}
	var order []string
	addDir := func(d string) {
		var chain []string
		for d = path.Clean(d); d != "/" && !dirs[d]; d = path.Dir(d) {
			chain = append(chain, d)
			dirs[d] = true
		}
		for i := len(chain) - 1; i >= 0; i-- {
			order = append(order, chain[i])
		}
	}
	for _, d := range cfg.Dirs {
		addDir(d)
	}
	addDir(path.Dir(cfg.Entrypoint))
	for _, f := range cfg.Files {
		addDir(path.Dir(f.Path))
	}

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range order {
		mode := int64(0o755)
		if d == "/tmp" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: mode,
			ModTime: cfg.Created, Format: tar.FormatPAX,
		}); err != nil {
			return nil, err
		}
	}
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg, Name: strings.TrimPrefix(cfg.Entrypoint, "/"), Mode: 0o755,
		Size: int64(len(bin)), ModTime: cfg.Created, Format: tar.FormatPAX,
	}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	for i, f := range cfg.Files {
		mode := f.Mode
		if mode == 0 {
			mode = 0o644
		}
		if err := tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeReg, Name: strings.TrimPrefix(f.Path, "/"), Mode: mode,
			Size: int64(len(files[i])), ModTime: cfg.Created, Format: tar.FormatPAX,
		}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(files[i]); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func imageSize(img v1.Image) (int64, error) {
	m, err := img.Manifest()
	if err != nil {
		return 0, err
	}
	size := m.Config.Size
	for _, l := range m.Layers {
		size += l.Size
	}
	return size, nil
}

// dockerManifestJSON is manifest.json for Docker's classic loader: one entry,
// the given image, tagged with every name in Docker's familiar form, pointing
// at the OCI layout's blob paths (as `docker save` does since Docker 25).
func dockerManifestJSON(img v1.Image, names []reference.NamedTagged) ([]byte, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	blob := func(h v1.Hash) string { return path.Join("blobs", h.Algorithm, h.Hex) }
	entry := tarball.Descriptor{Config: blob(m.Config.Digest)}
	for _, n := range names {
		entry.RepoTags = append(entry.RepoTags, reference.FamiliarString(n))
	}
	for _, l := range m.Layers {
		entry.Layers = append(entry.Layers, blob(l.Digest))
	}
	data, err := json.Marshal(tarball.Manifest{entry})
	if err != nil {
		return nil, fmt.Errorf("manifest.json: %w", err)
	}
	return data, nil
}

// writeTar packs the layout directory plus manifest.json into one tar, in a
// fixed order with fixed timestamps so equal inputs give equal archives.
func writeTar(out, dir string, dockerManifest []byte, mtime time.Time) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: rel + "/", Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX})
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return writeTarFile(tw, rel, data, mtime)
	})
	if err == nil {
		err = writeTarFile(tw, "manifest.json", dockerManifest, mtime)
	}
	if err == nil {
		err = tw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write archive %q: %w", out, err)
	}
	return nil
}

func writeTarFile(tw *tar.Writer, name string, data []byte, mtime time.Time) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: mtime, Format: tar.FormatPAX}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
