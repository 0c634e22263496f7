package runtime

import (
	"context"
	"fmt"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
)

// ArchiveImages returns the image names an OCI layout archive carries (the
// io.containerd.image.name annotations of its index.json) with the digest
// each points at, without importing anything. It returns nil for an archive
// that does not name its images that way (a Docker save archive).
func ArchiveImages(file string) (map[string]string, error) {
	names, err := archiveNames(file)
	if err != nil {
		return nil, fmt.Errorf("image archive %q: %w", file, err)
	}
	return names, nil
}

// DeleteImage removes the image record name (normalised first) from the
// namespace; containerd's garbage collector then frees the content no other
// image or container uses. An absent image is no error. Containers created
// from it keep their snapshots and run on.
func (r *Runtime) DeleteImage(ctx context.Context, name string) error {
	n, err := NormalizeName(name)
	if err != nil {
		return err
	}
	err = r.client.ImageService().Delete(r.ctx(ctx), n, images.SynchronousDelete())
	if err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete image %q: %w", n, err)
	}
	return nil
}
