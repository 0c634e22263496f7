package supervisor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Identity is what decides what a collector runs besides its config: the
// image digest its tag points to, the content of the secret files it mounts
// and the device nodes its device paths lead to. It is resolved at every task
// start, at every reload and every few seconds while the task runs
// (WithIdentityInterval); it is part of the spec's hash, so any change
// recreates the container. An empty field is a part that could not be
// resolved (an absent image, an unplugged device): see MergeIdentity.
type Identity struct {
	// ImageDigest is the digest the spec's image tag points to.
	ImageDigest string `json:"image_digest"`
	// Files are the secret mounts (Spec.SecretMounts), in mount order.
	Files []FileDigest `json:"files,omitempty"`
	// Devices are the configured devices, in config order.
	Devices []DeviceNode `json:"devices,omitempty"`
}

// FileDigest is the content of a secret mount.
type FileDigest struct {
	// Path is the host path.
	Path string `json:"path"`
	// Digest is "sha256:HEX" of the content: of a file, its bytes (or, past
	// MaxSecretBytes, its size and modification time); of a directory, the
	// names and contents of its regular files.
	Digest string `json:"digest"`
}

// DeviceNode is the node a configured device path leads to.
type DeviceNode struct {
	// Path is the configured host path (a udev by-id or by-path link, a pty
	// link, or the node itself).
	Path string `json:"path"`
	// Node is the real path it resolves to, Major:Minor its device number.
	Node  string `json:"node"`
	Major uint32 `json:"major"`
	Minor uint32 `json:"minor"`
	// Created is, for a pseudo-terminal, its node's change time in Unix
	// nanoseconds. A pty is bind-mounted (it cannot be recreated inside), and
	// the mount pins the node: a new pty that gets the same number behind
	// the same link is a new node all the same.
	Created int64 `json:"created,omitempty"`
}

func (d DeviceNode) String() string {
	if d.Node == "" {
		return "unresolved"
	}
	return fmt.Sprintf("%s (%d:%d)", d.Node, d.Major, d.Minor)
}

// ImageResolver tells which digest an image tag points to now.
type ImageResolver interface {
	// ImageDigest returns the digest of image ref ("sha256:…"); an absent
	// image is an error.
	ImageDigest(ctx context.Context, ref string) (string, error)
}

// MaxSecretBytes bounds how much of a secret file is read to hash it: a
// larger file is represented by its size and modification time.
const MaxSecretBytes = 1 << 20

// maxSecretDirEntries bounds the entries of a mounted directory that are hashed.
const maxSecretDirEntries = 256

// ptsMajorFirst and ptsMajorLast bound the Unix98 pty slave majors.
const (
	ptsMajorFirst = 136
	ptsMajorLast  = 143
)

// ResolveIdentity resolves spec's identity now. A part that cannot be
// resolved is left empty and its error joined to the returned one; the rest
// is resolved all the same.
func ResolveIdentity(ctx context.Context, images ImageResolver, spec *Spec) (Identity, error) {
	var (
		id   Identity
		errs []error
	)
	if images != nil {
		d, err := images.ImageDigest(ctx, spec.Image)
		if err != nil {
			errs = append(errs, fmt.Errorf("image %q: %w", spec.Image, err))
		}
		id.ImageDigest = d
	}
	for _, m := range spec.SecretMounts() {
		d, err := hashSecret(m.Source)
		if err != nil {
			errs = append(errs, err)
		}
		id.Files = append(id.Files, FileDigest{Path: m.Source, Digest: d})
	}
	for _, dev := range spec.Devices {
		n, err := resolveDevice(dev.Host)
		if err != nil {
			errs = append(errs, err)
		}
		id.Devices = append(id.Devices, n)
	}
	return id, errors.Join(errs...)
}

// MergeIdentity returns cur with every part it could not resolve taken from
// prev: a device unplugged for a moment or an image being re-imported does
// not count as a change, so it does not stop a working collector.
func MergeIdentity(prev, cur Identity) Identity {
	out := Identity{ImageDigest: cur.ImageDigest}
	if out.ImageDigest == "" {
		out.ImageDigest = prev.ImageDigest
	}
	for _, f := range cur.Files {
		if f.Digest == "" {
			if i := slices.IndexFunc(prev.Files, func(p FileDigest) bool { return p.Path == f.Path }); i >= 0 {
				f = prev.Files[i]
			}
		}
		out.Files = append(out.Files, f)
	}
	for _, d := range cur.Devices {
		if d.Node == "" {
			if i := slices.IndexFunc(prev.Devices, func(p DeviceNode) bool { return p.Path == d.Path }); i >= 0 {
				d = prev.Devices[i]
			}
		}
		out.Devices = append(out.Devices, d)
	}
	return out
}

// IdentityChanges describes how cur differs from prev, one entry per part
// ("image sha256:1234… -> sha256:5678…", "file /etc/fieldgate/mqtt.pass",
// "device /dev/serial/by-id/x: /dev/ttyUSB0 (188:0) -> /dev/ttyUSB1 (188:1)").
func IdentityChanges(prev, cur Identity) []string {
	var out []string
	if prev.ImageDigest != cur.ImageDigest {
		out = append(out, fmt.Sprintf("image %s -> %s", shortDigest(prev.ImageDigest), shortDigest(cur.ImageDigest)))
	}
	files := map[string]string{}
	for _, f := range prev.Files {
		files[f.Path] = f.Digest
	}
	for _, f := range cur.Files {
		if old, ok := files[f.Path]; !ok || old != f.Digest {
			out = append(out, "file "+f.Path)
		}
	}
	devs := map[string]DeviceNode{}
	for _, d := range prev.Devices {
		devs[d.Path] = d
	}
	for _, d := range cur.Devices {
		if old, ok := devs[d.Path]; !ok || old != d {
			out = append(out, fmt.Sprintf("device %s: %s -> %s", d.Path, old, d))
		}
	}
	return out
}

func shortDigest(d string) string {
	if d == "" {
		return "none"
	}
	if h, ok := strings.CutPrefix(d, "sha256:"); ok && len(h) > 12 {
		return "sha256:" + h[:12]
	}
	return d
}

// hashSecret hashes a secret mount's content without blocking on a FIFO or
// a device and without reading more than MaxSecretBytes of any file.
func hashSecret(path string) (string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("secret %q: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("secret %q: %w", path, err)
	}
	h := sha256.New()
	switch {
	case fi.Mode().IsRegular():
		if err := hashFile(h, f, fi); err != nil {
			return "", fmt.Errorf("secret %q: %w", path, err)
		}
	case fi.IsDir():
		entries, err := f.ReadDir(maxSecretDirEntries)
		if err != nil && err != io.EOF {
			return "", fmt.Errorf("secret dir %q: %w", path, err)
		}
		sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
		for _, e := range entries {
			if !e.Type().IsRegular() {
				continue // links, FIFOs and subdirectories are not followed
			}
			g, err := os.OpenFile(filepath.Join(path, e.Name()), os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return "", fmt.Errorf("secret %q: %w", filepath.Join(path, e.Name()), err)
			}
			gi, err := g.Stat()
			if err == nil && gi.Mode().IsRegular() {
				fmt.Fprintf(h, "%s\x00", e.Name())
				err = hashFile(h, g, gi)
			}
			g.Close()
			if err != nil {
				return "", fmt.Errorf("secret %q: %w", filepath.Join(path, e.Name()), err)
			}
		}
	default:
		return "", fmt.Errorf("secret %q is neither a regular file nor a directory (%s)", path, fi.Mode().Type())
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

func hashFile(h io.Writer, f *os.File, fi os.FileInfo) error {
	if fi.Size() > MaxSecretBytes {
		_, err := fmt.Fprintf(h, "size %d mtime %d\x00", fi.Size(), fi.ModTime().UnixNano())
		return err
	}
	fmt.Fprintf(h, "%d\x00", fi.Size())
	_, err := io.Copy(h, io.LimitReader(f, MaxSecretBytes))
	return err
}

// resolveDevice follows path's links to its node. A missing path or a
// path that is not a device node gives a DeviceNode with an empty Node.
func resolveDevice(path string) (DeviceNode, error) {
	n := DeviceNode{Path: path}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return n, fmt.Errorf("device %q: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(real, &st); err != nil {
		return n, fmt.Errorf("device %q: %w", path, err)
	}
	typ := st.Mode & unix.S_IFMT
	if typ != unix.S_IFCHR && typ != unix.S_IFBLK {
		return n, fmt.Errorf("device %q (%s) is not a character or block device", path, real)
	}
	n.Node, n.Major, n.Minor = real, unix.Major(st.Rdev), unix.Minor(st.Rdev)
	if typ == unix.S_IFCHR && n.Major >= ptsMajorFirst && n.Major <= ptsMajorLast {
		n.Created = st.Ctim.Nano()
	}
	return n, nil
}
