package runtime

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/platforms"
	"github.com/distribution/reference"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ErrImageNotFound is wrapped by Image and Create when an image is absent.
var ErrImageNotFound = errors.New("image not found")

// ImageInfo is an image present in the namespace.
type ImageInfo struct {
	// Name is the normalised name, e.g. docker.io/fieldgate/collector-modbus:latest.
	Name string
	// Digest is the image's target digest (for our archives: the
	// multi-platform index).
	Digest string
}

// ImportResult is one archive handled by ImportDir.
type ImportResult struct {
	// Archive is the file's path.
	Archive string
	// Images are the names it carries, with their digests.
	Images []ImageInfo
	// Skipped is true when every image was already present with the same
	// digest, so nothing was imported.
	Skipped bool
}

// NormalizeName returns ref as containerd stores it, as Docker normalises:
// fieldgate/collector-modbus → docker.io/fieldgate/collector-modbus:latest.
func NormalizeName(ref string) (string, error) {
	n, err := reference.ParseDockerRef(ref)
	if err != nil {
		return "", fmt.Errorf("image reference %q: %w", ref, err)
	}
	return n.String(), nil
}

// Image looks an image up by reference (normalised first). An absent image
// is an error wrapping ErrImageNotFound that names it.
func (r *Runtime) Image(ctx context.Context, ref string) (ImageInfo, error) {
	img, err := r.image(ctx, ref)
	if err != nil {
		return ImageInfo{}, err
	}
	return ImageInfo{Name: img.Name(), Digest: img.Target().Digest.String()}, nil
}

func (r *Runtime) image(ctx context.Context, ref string) (containerd.Image, error) {
	name, err := NormalizeName(ref)
	if err != nil {
		return nil, err
	}
	img, err := r.client.GetImage(r.ctx(ctx), name)
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("image %q (%s) is not present in containerd namespace %q; put its archive in images_dir: %w", ref, name, r.namespace, ErrImageNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("image %q: %w", ref, err)
	}
	return img, nil
}

// Images lists the images in the namespace, sorted by name.
func (r *Runtime) Images(ctx context.Context) ([]ImageInfo, error) {
	imgs, err := r.client.ListImages(r.ctx(ctx))
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	out := make([]ImageInfo, 0, len(imgs))
	for _, img := range imgs {
		out = append(out, ImageInfo{Name: img.Name(), Digest: img.Target().Digest.String()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// ImportDir imports every *.tar archive in dir (sorted by name), then makes
// sure each image is unpacked for this host's platform. An OCI layout archive
// whose names are all present with the same digests is skipped without
// reading its blobs; other archives are imported (containerd's content store
// does not rewrite blobs it has). A missing dir is an error; one archive
// failing does not stop the others: the errors are joined.
func (r *Runtime) ImportDir(ctx context.Context, dir string) ([]ImportResult, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("images dir: %w", err)
	}
	var (
		results []ImportResult
		errs    []error
	)
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".tar") {
			continue
		}
		res, err := r.ImportArchive(ctx, filepath.Join(dir, e.Name()))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		results = append(results, res)
	}
	return results, errors.Join(errs...)
}

// ImportArchive imports one archive (see ImportDir).
func (r *Runtime) ImportArchive(ctx context.Context, file string) (ImportResult, error) {
	ctx = r.ctx(ctx)
	res := ImportResult{Archive: file}
	want, err := archiveNames(file)
	if err != nil {
		return res, fmt.Errorf("image archive %q: %w", file, err)
	}
	if len(want) > 0 && r.allPresent(ctx, want) {
		res.Skipped = true
		for _, n := range sortedKeys(want) {
			res.Images = append(res.Images, ImageInfo{Name: n, Digest: want[n]})
		}
		r.log.Debug("image archive already imported", "archive", file)
	} else {
		f, err := os.Open(file)
		if err != nil {
			return res, fmt.Errorf("image archive: %w", err)
		}
		imgs, err := r.client.Import(ctx, f, containerd.WithImportCompression())
		f.Close()
		if err != nil {
			return res, fmt.Errorf("import image archive %q: %w", file, err)
		}
		if len(imgs) == 0 {
			return res, fmt.Errorf("image archive %q names no image (no io.containerd.image.name annotation or RepoTags)", file)
		}
		for _, img := range imgs {
			res.Images = append(res.Images, ImageInfo{Name: img.Name, Digest: img.Target.Digest.String()})
		}
		r.log.Info("image archive imported", "archive", file, "images", len(imgs))
	}
	for _, im := range res.Images {
		if err := r.unpack(ctx, im.Name); err != nil {
			return res, fmt.Errorf("image archive %q: %w", file, err)
		}
	}
	return res, nil
}

// allPresent reports whether every name exists with the given digest.
func (r *Runtime) allPresent(ctx context.Context, want map[string]string) bool {
	for name, dg := range want {
		img, err := r.client.ImageService().Get(ctx, name)
		if err != nil || img.Target.Digest.String() != dg {
			return false
		}
	}
	return true
}

// unpack unpacks an image for the host platform unless already unpacked.
func (r *Runtime) unpack(ctx context.Context, name string) error {
	img, err := r.client.GetImage(ctx, name)
	if err != nil {
		return fmt.Errorf("image %q: %w", name, err)
	}
	ok, err := img.IsUnpacked(ctx, r.snapshotter)
	if errdefs.IsNotFound(err) {
		return fmt.Errorf("image %q has no variant for this host's platform %s: %w", name, platforms.DefaultString(), err)
	}
	if err != nil {
		return fmt.Errorf("image %q for %s: %w", name, platforms.DefaultString(), err)
	}
	if ok {
		return nil
	}
	if err := img.Unpack(ctx, r.snapshotter); err != nil {
		return fmt.Errorf("unpack image %q for %s: %w", name, platforms.DefaultString(), err)
	}
	return nil
}

// archiveNames reads index.json of an OCI layout archive and returns the
// image names it carries (io.containerd.image.name) with their digests. For
// an archive that is not an OCI layout, or one without such names, it
// returns nil: the archive must be imported to learn its names.
func archiveNames(file string) (map[string]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var (
		tr        = tar.NewReader(f)
		idx       ocispec.Index
		hasIndex  bool
		hasLayout bool
	)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("not a tar archive: %w", err)
		}
		switch path.Clean(h.Name) {
		case ocispec.ImageLayoutFile:
			hasLayout = true
		case "index.json":
			if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(&idx); err != nil {
				return nil, fmt.Errorf("index.json: %w", err)
			}
			hasIndex = true
		}
	}
	if !hasLayout || !hasIndex {
		return nil, nil
	}
	names := map[string]string{}
	for _, m := range idx.Manifests {
		n := m.Annotations[images.AnnotationImageName]
		if n == "" {
			return nil, nil
		}
		names[n] = m.Digest.String()
	}
	return names, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// PruneImages deletes every image of the namespace whose digest is neither
// in keep nor the one a container of the namespace was created from, and
// returns what it deleted. containerd's garbage collector then frees the
// content no image or container references. Deleting a name that another
// caller deleted meanwhile is no error.
func (r *Runtime) PruneImages(ctx context.Context, keep []string) ([]ImageInfo, error) {
	ctx = r.ctx(ctx)
	keepSet := map[string]bool{}
	for _, d := range keep {
		keepSet[d] = true
	}
	cs, err := r.client.Containers(ctx)
	if err != nil {
		return nil, fmt.Errorf("prune images: list containers: %w", err)
	}
	for _, c := range cs {
		labels, err := c.Labels(ctx)
		if err != nil && !errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("prune images: container %q: %w", c.ID(), err)
		}
		if d := labels[labelImageDigest]; d != "" {
			keepSet[d] = true
		}
	}
	imgs, err := r.Images(ctx)
	if err != nil {
		return nil, fmt.Errorf("prune images: %w", err)
	}
	var (
		removed []ImageInfo
		errs    []error
	)
	for _, img := range imgs {
		if keepSet[img.Digest] {
			continue
		}
		if err := r.client.ImageService().Delete(ctx, img.Name); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete image %q: %w", img.Name, err))
			continue
		}
		r.log.Info("image pruned", "image", img.Name, "digest", img.Digest)
		removed = append(removed, img)
	}
	return removed, errors.Join(errs...)
}
