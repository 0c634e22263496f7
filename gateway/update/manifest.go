package update

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	goruntime "runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"

	fgruntime "fieldgate/runtime"
)

// Bundle layout: the signed manifest, its detached minisign signature, and
// the files the manifest lists. BinaryFile and InstallScript are required.
const (
	ManifestFile  = "manifest.json"
	SignatureFile = ManifestFile + ".minisig"
	BinaryFile    = "fieldgate"
	InstallScript = "install.sh"
	// ImagesDir holds the collector image archives (OCI layout tars).
	ImagesDir = "images"
)

// Product is the product every manifest names.
const Product = "fieldgate"

// ManifestFormat is the manifest format this version reads and writes. A
// manifest of another format is refused: fields are never added silently.
const ManifestFormat = 1

// Bounds on what is read from a bundle before or while it is verified.
const (
	maxManifestBytes  = 1 << 20
	maxSignatureBytes = 4 << 10
	maxFiles          = 1000
	maxFileBytes      = 4 << 30
)

// Architectures a bundle may be built for (the platforms of `make images`).
var Architectures = []string{"linux/amd64", "linux/arm64", "linux/arm/v7"}

// Manifest describes one bundle: what is signed. Every file of the bundle
// other than the manifest and its signature is listed with its size and
// sha256; the collector images are pinned by digest, so parts of two
// bundles cannot be mixed.
type Manifest struct {
	Format  int    `json:"format"`
	Product string `json:"product"`
	// Version is monotonic: dot-separated numbers, an optional leading "v"
	// (1, 2, 1.4.0, v2026.11.3). An older version is refused unless the
	// downgrade is asked for.
	Version string `json:"version"`
	// Release is free text for people (e.g. git describe); not compared.
	Release string `json:"release,omitempty"`
	// Architecture is the platform of the binary: one of Architectures.
	Architecture string  `json:"architecture"`
	Files        []File  `json:"files"`
	Images       []Image `json:"images"`
}

// File is one file of a bundle.
type File struct {
	// Path is slash-separated and relative to the bundle's top directory.
	Path       string `json:"path"`
	Size       int64  `json:"size"`
	SHA256     string `json:"sha256"`
	Executable bool   `json:"executable,omitempty"`
}

// Image is a collector image pinned by the manifest: the name (as
// containerd stores it, e.g. docker.io/fieldgate/collector-modbus:latest)
// points at Digest once the archive is imported.
type Image struct {
	Name    string `json:"name"`
	Digest  string `json:"digest"`
	Archive string `json:"archive"`
}

// ParseManifest decodes and checks a manifest strictly: unknown fields, a
// format other than ManifestFormat, a bad version, architecture, path,
// digest, or a file listed twice are errors.
func ParseManifest(data []byte) (*Manifest, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrMalformed, ManifestFile, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: %s: data after the JSON object", ErrMalformed, ManifestFile)
	}
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrMalformed, ManifestFile, err)
	}
	return &m, nil
}

func (m *Manifest) check() error {
	var errs []error
	if m.Format != ManifestFormat {
		errs = append(errs, fmt.Errorf("format %d is not supported (valid: %d)", m.Format, ManifestFormat))
	}
	if m.Product != Product {
		errs = append(errs, fmt.Errorf("product %q is not %q", m.Product, Product))
	}
	if _, err := ParseVersion(m.Version); err != nil {
		errs = append(errs, err)
	}
	if !slices.Contains(Architectures, m.Architecture) {
		errs = append(errs, fmt.Errorf("unknown architecture %q (valid: %s)", m.Architecture, strings.Join(Architectures, ", ")))
	}
	if len(m.Files) > maxFiles {
		errs = append(errs, fmt.Errorf("%d files listed, at most %d", len(m.Files), maxFiles))
	}
	seen := map[string]bool{}
	for _, f := range m.Files {
		if err := checkPath(f.Path); err != nil {
			errs = append(errs, err)
			continue
		}
		if seen[f.Path] {
			errs = append(errs, fmt.Errorf("file %q listed twice", f.Path))
		}
		seen[f.Path] = true
		if f.Size < 0 || f.Size > maxFileBytes {
			errs = append(errs, fmt.Errorf("file %q: size %d out of range", f.Path, f.Size))
		}
		if !isHexSHA256(f.SHA256) {
			errs = append(errs, fmt.Errorf("file %q: sha256 %q is not 64 lowercase hex digits", f.Path, f.SHA256))
		}
	}
	for _, req := range []string{BinaryFile, InstallScript} {
		if !seen[req] {
			errs = append(errs, fmt.Errorf("required file %q is not listed", req))
		}
	}
	for _, im := range m.Images {
		if n, err := fgruntime.NormalizeName(im.Name); err != nil || n != im.Name {
			errs = append(errs, fmt.Errorf("image name %q is not a normalised reference (e.g. docker.io/fieldgate/collector-modbus:latest)", im.Name))
		}
		if d, ok := strings.CutPrefix(im.Digest, "sha256:"); !ok || !isHexSHA256(d) {
			errs = append(errs, fmt.Errorf("image %q: digest %q is not sha256:<64 hex digits>", im.Name, im.Digest))
		}
		if !seen[im.Archive] {
			errs = append(errs, fmt.Errorf("image %q: archive %q is not a listed file", im.Name, im.Archive))
		}
	}
	return errors.Join(errs...)
}

// checkPath accepts a clean relative slash path of plain components.
func checkPath(p string) error {
	if p == "" || p != path.Clean(p) || path.IsAbs(p) || p == ManifestFile || p == SignatureFile {
		return fmt.Errorf("invalid file path %q", p)
	}
	for _, part := range strings.Split(p, "/") {
		if part == "." || part == ".." || strings.HasPrefix(part, ".") {
			return fmt.Errorf("invalid file path %q", p)
		}
		for _, r := range part {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._+-", r)) {
				return fmt.Errorf("invalid file path %q", p)
			}
		}
	}
	return nil
}

func isHexSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}

// File returns the listed file at p.
func (m *Manifest) File(p string) (File, bool) {
	for _, f := range m.Files {
		if f.Path == p {
			return f, true
		}
	}
	return File{}, false
}

// Pins returns the pinned images as name → digest.
func (m *Manifest) Pins() map[string]string {
	out := make(map[string]string, len(m.Images))
	for _, im := range m.Images {
		out[im.Name] = im.Digest
	}
	return out
}

// Marshal encodes the manifest as written into a bundle (indented, files
// and images sorted), so the same inputs always give the same bytes.
func (m *Manifest) Marshal() ([]byte, error) {
	c := *m
	c.Files = slices.Clone(m.Files)
	c.Images = slices.Clone(m.Images)
	sort.Slice(c.Files, func(i, j int) bool { return c.Files[i].Path < c.Files[j].Path })
	sort.Slice(c.Images, func(i, j int) bool { return c.Images[i].Name < c.Images[j].Name })
	b, err := json.MarshalIndent(&c, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// ManifestInfo is what NewManifest cannot read off the files.
type ManifestInfo struct {
	Version      string
	Release      string
	Architecture string
}

// NewManifest lists every regular file under dir (except a manifest and
// signature already there) with its size and sha256, and pins the images of
// every images/*.tar archive by the names and digests of its index.json. A
// symlink or other non-regular file is an error: a bundle holds only files.
func NewManifest(dir string, info ManifestInfo) (*Manifest, error) {
	m := &Manifest{Format: ManifestFormat, Product: Product, Version: info.Version,
		Release: info.Release, Architecture: info.Architecture, Files: []File{}, Images: []Image{}}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		switch {
		case d.IsDir():
			return nil
		case rel == ManifestFile || rel == SignatureFile:
			return nil
		case !d.Type().IsRegular():
			return fmt.Errorf("%s: not a regular file (a bundle holds only files)", p)
		}
		f, err := hashFile(p)
		if err != nil {
			return err
		}
		f.Path = rel
		m.Files = append(m.Files, f)
		if path.Dir(rel) == ImagesDir && strings.HasSuffix(rel, ".tar") {
			names, err := fgruntime.ArchiveImages(p)
			if err != nil {
				return err
			}
			if len(names) == 0 {
				return fmt.Errorf("%s: no image names in its index.json (io.containerd.image.name): build it with `make images`", p)
			}
			for n, dg := range names {
				m.Images = append(m.Images, Image{Name: n, Digest: dg, Archive: rel})
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("manifest of %s: %w", dir, err)
	}
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("manifest of %s: %w", dir, err)
	}
	return m, nil
}

// hashFile reads a regular file without following a symlink.
func hashFile(p string) (File, error) {
	fd, err := openNoFollow(p)
	if err != nil {
		return File{}, err
	}
	defer fd.Close()
	st, err := fd.Stat()
	if err != nil {
		return File{}, err
	}
	h := sha256.New()
	n, err := io.Copy(h, fd)
	if err != nil {
		return File{}, fmt.Errorf("%s: %w", p, err)
	}
	return File{Size: n, SHA256: hex.EncodeToString(h.Sum(nil)), Executable: st.Mode()&0o111 != 0}, nil
}

// Version is a parsed manifest version: its numbers.
type Version []uint64

// ParseVersion parses dot-separated decimal numbers with an optional leading
// "v": "2", "1.4.0", "v2026.11.3".
func ParseVersion(s string) (Version, error) {
	t := strings.TrimPrefix(s, "v")
	if t == "" {
		return nil, fmt.Errorf("invalid version %q (want numbers separated by dots, e.g. 1.4.0)", s)
	}
	var v Version
	for _, part := range strings.Split(t, ".") {
		n, err := strconv.ParseUint(part, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("invalid version %q (want numbers separated by dots, e.g. 1.4.0)", s)
		}
		v = append(v, n)
	}
	return v, nil
}

// Compare returns -1, 0 or 1 as v is older than, the same as or newer than
// w; missing trailing numbers count as 0 (1.4 = 1.4.0).
func (v Version) Compare(w Version) int {
	for i := 0; i < max(len(v), len(w)); i++ {
		var a, b uint64
		if i < len(v) {
			a = v[i]
		}
		if i < len(w) {
			b = w[i]
		}
		switch {
		case a < b:
			return -1
		case a > b:
			return 1
		}
	}
	return 0
}

// compareVersions compares two version strings already checked by
// ParseManifest.
func compareVersions(a, b string) int {
	va, errA := ParseVersion(a)
	vb, errB := ParseVersion(b)
	if errA != nil || errB != nil {
		return strings.Compare(a, b)
	}
	return va.Compare(vb)
}

// HostArchitecture is this binary's platform in the form of Architectures
// (an arm build names its GOARM variant, v7 by default).
func HostArchitecture() string {
	if goruntime.GOARCH != "arm" {
		return goruntime.GOOS + "/" + goruntime.GOARCH
	}
	variant := "7"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "GOARM" && s.Value != "" {
				variant = s.Value
			}
		}
	}
	return goruntime.GOOS + "/arm/v" + variant
}

// openNoFollow opens a regular file for reading, refusing a symlink at its
// last component.
func openNoFollow(p string) (*os.File, error) {
	fd, err := os.OpenFile(p, os.O_RDONLY|noFollow, 0)
	if err != nil {
		return nil, err
	}
	st, err := fd.Stat()
	if err != nil {
		fd.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		fd.Close()
		return nil, fmt.Errorf("%s: not a regular file", p)
	}
	return fd, nil
}
