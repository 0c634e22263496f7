package update

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"sort"

	fgruntime "fieldgate/runtime"
)

// ImageRef is an image name (as containerd stores it) and its digest.
type ImageRef struct {
	Name   string
	Digest string
}

// Importer imports one image archive into the container runtime and says
// which names it now points where.
type Importer interface {
	ImportArchive(ctx context.Context, file string) ([]ImageRef, error)
}

// ImportPinned imports the collector images the manifest of slot pins, and
// only those, at their pinned digests: each archive is hashed against the
// manifest again (the slot's files are not trusted to have stayed intact),
// its index.json must name exactly the pinned images, and after the import
// every pinned name must point at its pinned digest. Archives failing a
// check are not imported; the errors are joined. Nothing else is imported:
// an archive dropped into images_dir cannot re-point an image name.
func (s *Store) ImportPinned(ctx context.Context, imp Importer, slot string, log *slog.Logger) error {
	m, err := s.Manifest(slot)
	if err != nil {
		return err
	}
	byArchive := map[string]map[string]string{}
	for _, im := range m.Images {
		if byArchive[im.Archive] == nil {
			byArchive[im.Archive] = map[string]string{}
		}
		byArchive[im.Archive][im.Name] = im.Digest
	}
	archives := make([]string, 0, len(byArchive))
	for a := range byArchive {
		archives = append(archives, a)
	}
	sort.Strings(archives)
	var errs []error
	for _, a := range archives {
		pins := byArchive[a]
		file := filepath.Join(s.SlotDir(slot), filepath.FromSlash(a))
		if err := s.checkSlotFile(m, slot, a); err != nil {
			errs = append(errs, err)
			continue
		}
		names, err := fgruntime.ArchiveImages(file)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !maps.Equal(names, pins) {
			errs = append(errs, fmt.Errorf("slot %q: image archive %s names %v, the manifest pins %v: not imported", slot, a, names, pins))
			continue
		}
		got, err := imp.ImportArchive(ctx, file)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, ref := range got {
			if pins[ref.Name] != ref.Digest {
				errs = append(errs, fmt.Errorf("slot %q: image %s imported at %s, the manifest pins %q", slot, ref.Name, ref.Digest, pins[ref.Name]))
			}
		}
		log.Info("pinned images imported", "slot", slot, "version", m.Version, "archive", a, "images", len(got))
	}
	return errors.Join(errs...)
}

// checkSlotFile hashes a file of a slot against its manifest entry.
func (s *Store) checkSlotFile(m *Manifest, slot, p string) error {
	f, ok := m.File(p)
	if !ok {
		return fmt.Errorf("slot %q: %s is not listed in its manifest", slot, p)
	}
	got, err := hashFile(filepath.Join(s.SlotDir(slot), filepath.FromSlash(p)))
	if err != nil {
		return fmt.Errorf("slot %q: %w", slot, err)
	}
	if got.Size != f.Size || got.SHA256 != f.SHA256 {
		return fmt.Errorf("slot %q: %w on %s: sha256 %s (%d bytes), the manifest says %s (%d bytes): not imported",
			slot, ErrHashMismatch, p, got.SHA256, got.Size, f.SHA256, f.Size)
	}
	return nil
}

// ImagePruner deletes the runtime's images whose digest is not in keep (nor
// in use by a container), returning the names deleted.
type ImagePruner interface {
	PruneImages(ctx context.Context, keep []string) ([]string, error)
}

// PruneImages deletes the images neither slot's manifest pins: after a
// commit the previous version's images stay (the rollback target until the
// next update); older ones go. It returns the names deleted.
func (s *Store) PruneImages(ctx context.Context, p ImagePruner) ([]string, error) {
	var keep []string
	for _, slot := range []string{SlotA, SlotB} {
		m, err := s.Manifest(slot)
		if err != nil {
			continue // an empty or unreadable slot pins nothing
		}
		for _, im := range m.Images {
			keep = append(keep, im.Digest)
		}
	}
	if len(keep) == 0 {
		return nil, errors.New("prune: no slot pins any image; nothing pruned")
	}
	sort.Strings(keep)
	return p.PruneImages(ctx, slices.Compact(keep))
}
