package runtime

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Fixed container paths of the runtime contract.
const (
	// ConfigPath is where the collector's config file is mounted, read-only.
	ConfigPath = "/etc/fieldgate/collector.yaml"
	// DataPath is the collector's DATA_DIR inside the container.
	DataPath = "/var/lib/fieldgate"
)

// Labels the runtime sets on every container it creates.
const (
	// LabelLogPath holds the host path of the container's log file.
	LabelLogPath = "fieldgate.runtime/log-path"
	// LabelManaged marks containers created by this package.
	LabelManaged = "fieldgate.runtime/managed"
)

// cpuPeriod is the CFS period used for CPU limits (100 ms, the kernel default).
const cpuPeriod = 100000

// Spec is one collector container.
type Spec struct {
	// ID is the container id (the collector name): [A-Za-z0-9][A-Za-z0-9_.-]*.
	ID string
	// Image is the image reference; it is normalised (Docker rules) and must
	// be present (see ImportDir).
	Image string
	// Args, if set, replace the image's entrypoint and command.
	Args []string
	// Env is the environment, "KEY=value" entries, added to the image's.
	Env []string
	// Privileged gives the container every capability and every host device.
	Privileged bool
	// Devices are made reachable inside at their container paths.
	Devices []Device
	// Mounts are bind mounts: the config file (read-only at ConfigPath),
	// the data dir (at DataPath), credential files.
	Mounts []Mount
	// CPUs limits CPU time (0.5 = half a core); 0 means no limit.
	CPUs float64
	// MemoryBytes limits memory; 0 means no limit.
	MemoryBytes int64
	// Labels are container labels (e.g. a spec hash for reload decisions).
	// Keys starting with "fieldgate.runtime/" are reserved.
	Labels map[string]string
	// LogPath is the host file receiving the task's stdout and stderr,
	// rotated next to it (LogPath.1, …). Required.
	LogPath string
}

// Device maps a host device node into the container.
type Device struct {
	// Host is the host path; symlinks (/dev/serial/by-id/…) are resolved.
	Host string
	// Container is the path inside; default Host.
	Container string
}

// Mount is a bind mount of a host file or directory.
type Mount struct {
	Host      string
	Container string
	ReadOnly  bool
}

var idRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,75}$`)

// Validate checks the spec without touching the host or containerd.
func (s Spec) Validate() error {
	var errs []error
	if !idRe.MatchString(s.ID) {
		errs = append(errs, fmt.Errorf("container id %q: want [A-Za-z0-9][A-Za-z0-9_.-]*, at most 76 characters", s.ID))
	}
	if s.Image == "" {
		errs = append(errs, fmt.Errorf("container %q: image is empty", s.ID))
	} else if _, err := NormalizeName(s.Image); err != nil {
		errs = append(errs, fmt.Errorf("container %q: %w", s.ID, err))
	}
	for _, e := range s.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			errs = append(errs, fmt.Errorf("container %q: env entry %q: want KEY=value", s.ID, e))
		}
	}
	for _, d := range s.Devices {
		if !path.IsAbs(d.Host) || (d.Container != "" && !path.IsAbs(d.Container)) {
			errs = append(errs, fmt.Errorf("container %q: device %q:%q: paths must be absolute", s.ID, d.Host, d.Container))
		}
	}
	for _, m := range s.Mounts {
		if !path.IsAbs(m.Host) || !path.IsAbs(m.Container) {
			errs = append(errs, fmt.Errorf("container %q: mount %q:%q: paths must be absolute", s.ID, m.Host, m.Container))
		}
	}
	if s.CPUs < 0 || math.IsNaN(s.CPUs) || math.IsInf(s.CPUs, 0) {
		errs = append(errs, fmt.Errorf("container %q: cpus %v must be a positive number or 0 (no limit)", s.ID, s.CPUs))
	}
	if s.MemoryBytes < 0 {
		errs = append(errs, fmt.Errorf("container %q: memory %d must be positive or 0 (no limit)", s.ID, s.MemoryBytes))
	}
	for k := range s.Labels {
		if strings.HasPrefix(k, "fieldgate.runtime/") {
			errs = append(errs, fmt.Errorf("container %q: label %q uses the reserved prefix fieldgate.runtime/", s.ID, k))
		}
	}
	if s.LogPath == "" || !filepath.IsAbs(s.LogPath) {
		errs = append(errs, fmt.Errorf("container %q: log path %q must be an absolute path", s.ID, s.LogPath))
	}
	return errors.Join(errs...)
}

// ptsMajorFirst and ptsMajorLast bound the Unix98 pty slave majors (devpts).
// Such a node cannot be recreated with mknod inside a container — opening the
// copy fails with EIO, since it is not on the devpts instance that owns the
// pty — so it is bind-mounted instead.
const (
	ptsMajorFirst = 136
	ptsMajorLast  = 143
)

// deviceOpts resolves every device on the host and returns the spec options
// making it reachable inside: a device node (mknod by runc) for ordinary
// character and block devices, a bind mount for pty slaves; both get a cgroup
// allow rule.
func deviceOpts(devs []Device) ([]oci.SpecOpts, error) {
	var (
		opts   []oci.SpecOpts
		errs   []error
		seen   = map[string]bool{}
		nodes  []specs.LinuxDevice
		binds  []specs.Mount
		allows []specs.LinuxDeviceCgroup
	)
	for _, d := range devs {
		ctrPath := d.Container
		if ctrPath == "" {
			ctrPath = d.Host
		}
		if seen[ctrPath] {
			errs = append(errs, fmt.Errorf("device %q: container path %q given twice", d.Host, ctrPath))
			continue
		}
		seen[ctrPath] = true
		real, err := filepath.EvalSymlinks(d.Host)
		if err != nil {
			errs = append(errs, fmt.Errorf("device %q: %w", d.Host, err))
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(real, &st); err != nil {
			errs = append(errs, fmt.Errorf("device %q: %w", d.Host, err))
			continue
		}
		var typ string
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFCHR:
			typ = "c"
		case unix.S_IFBLK:
			typ = "b"
		default:
			errs = append(errs, fmt.Errorf("device %q (%s) is not a character or block device", d.Host, real))
			continue
		}
		major, minor := int64(unix.Major(uint64(st.Rdev))), int64(unix.Minor(uint64(st.Rdev)))
		allows = append(allows, specs.LinuxDeviceCgroup{Allow: true, Type: typ, Major: &major, Minor: &minor, Access: "rwm"})
		if typ == "c" && major >= ptsMajorFirst && major <= ptsMajorLast {
			binds = append(binds, specs.Mount{Destination: ctrPath, Type: "bind", Source: real, Options: []string{"rbind", "rw", "nosuid", "noexec"}})
			continue
		}
		mode := os.FileMode(st.Mode & 0o777)
		uid, gid := st.Uid, st.Gid
		nodes = append(nodes, specs.LinuxDevice{Path: ctrPath, Type: typ, Major: major, Minor: minor, FileMode: &mode, UID: &uid, GID: &gid})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(nodes) > 0 || len(allows) > 0 {
		opts = append(opts, func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
			if s.Linux == nil {
				s.Linux = &specs.Linux{}
			}
			if s.Linux.Resources == nil {
				s.Linux.Resources = &specs.LinuxResources{}
			}
			// Replace a node of the same path (privileged mode adds every host
			// device; an explicit mapping wins).
			byPath := map[string]bool{}
			for _, n := range nodes {
				byPath[n.Path] = true
			}
			for _, b := range binds {
				byPath[b.Destination] = true
			}
			kept := s.Linux.Devices[:0]
			for _, n := range s.Linux.Devices {
				if !byPath[n.Path] {
					kept = append(kept, n)
				}
			}
			s.Linux.Devices = append(kept, nodes...)
			s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, allows...)
			return nil
		})
	}
	if len(binds) > 0 {
		opts = append(opts, oci.WithMounts(binds))
	}
	return opts, nil
}

// specOpts builds the OCI spec options of s for image img.
func (r *Runtime) specOpts(s Spec, img containerd.Image) ([]oci.SpecOpts, error) {
	opts := []oci.SpecOpts{
		oci.WithDefaultUnixDevices,
		oci.WithImageConfig(img),
	}
	if len(s.Args) > 0 {
		opts = append(opts, oci.WithProcessArgs(s.Args...))
	}
	hostname, err := os.Hostname()
	if err != nil {
		return nil, fmt.Errorf("hostname: %w", err)
	}
	opts = append(opts,
		oci.WithHostNamespace(specs.NetworkNamespace),
		oci.WithHostHostsFile,
		oci.WithHostResolvconf,
		oci.WithHostname(hostname),
		oci.WithRootFSReadonly(),
	)
	if len(s.Env) > 0 {
		opts = append(opts, oci.WithEnv(s.Env))
	}
	if s.Privileged {
		opts = append(opts, oci.WithPrivileged, oci.WithAllDevicesAllowed, oci.WithHostDevices)
	}
	// A writable /tmp on the read-only root.
	mounts := []specs.Mount{{
		Destination: "/tmp", Type: "tmpfs", Source: "tmpfs",
		Options: []string{"nosuid", "nodev", "mode=1777", "size=16m"},
	}}
	for _, m := range s.Mounts {
		if _, err := os.Stat(m.Host); err != nil {
			return nil, fmt.Errorf("container %q: mount source: %w", s.ID, err)
		}
		o := []string{"rbind", "rprivate", "nosuid", "nodev"}
		if m.ReadOnly {
			o = append(o, "ro")
		} else {
			o = append(o, "rw")
		}
		mounts = append(mounts, specs.Mount{Destination: m.Container, Type: "bind", Source: m.Host, Options: o})
	}
	opts = append(opts, oci.WithMounts(mounts))
	devOpts, err := deviceOpts(s.Devices)
	if err != nil {
		return nil, fmt.Errorf("container %q: %w", s.ID, err)
	}
	opts = append(opts, devOpts...)
	if s.CPUs > 0 {
		quota := int64(math.Round(s.CPUs * cpuPeriod))
		if quota < 1000 {
			quota = 1000 // the kernel's minimum is 1 ms
		}
		opts = append(opts, oci.WithCPUCFS(quota, cpuPeriod))
	}
	if s.MemoryBytes > 0 {
		opts = append(opts, oci.WithMemoryLimit(uint64(s.MemoryBytes)))
	}
	return opts, nil
}

func copyLabels(in map[string]string, extra ...string) map[string]string {
	out := make(map[string]string, len(in)+len(extra)/2)
	for k, v := range in {
		out[k] = v
	}
	for i := 0; i+1 < len(extra); i += 2 {
		out[extra[i]] = extra[i+1]
	}
	return out
}
