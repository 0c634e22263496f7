package runtime

import "fmt"

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
