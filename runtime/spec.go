package runtime

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/contrib/seccomp"
	"github.com/containerd/containerd/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"fieldgate/internal/nofollow"
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
	// rotated next to it (LogPath.1, …). Required; it must not be inside a
	// writable mount (the log driver writes it as root).
	LogPath string
	// User is who the process runs as. nil means root when Privileged, and
	// otherwise DefaultUser(ID): a container that is not privileged never runs
	// as root.
	User *User
	// PidsLimit bounds the container's processes and threads together: 0
	// means DefaultPidsLimit, a negative value no limit.
	PidsLimit int64
}

// WithPrivateDir sets a directory only root can read (it is created 0700)
// where the runtime keeps, per container, copies of read-only files its
// non-root user could not read otherwise — a 0600 secret, the supervisor's
// 0600 config file — as that user's 0400 files. A copy is made when the
// container is created and removed with it. Without this option such a
// mount is an error.
func WithPrivateDir(dir string) Option { return func(r *Runtime) { r.private = dir } }

// User is a numeric user and group (the collector images are built from
// scratch: they have no passwd file to look names up in).
type User struct {
	UID uint32
	GID uint32
}

// User ids of containers that are not privileged: DefaultUser maps a
// container id into [userBase, userBase+userRange). The range lies in what
// systemd sets aside for containers (524288…1879048191), far from host users
// (below 65536) and from the usual subuid ranges.
const (
	userBase  = 524288
	userRange = 1 << 24
)

// DefaultUser is the user a container that is not privileged runs as unless
// Spec.User says otherwise: uid and gid userBase plus the FNV-1a hash of id
// modulo 2^24. It is stable (a collector keeps its uid across recreation,
// restarts and upgrades) and distinct per id in practice, so one collector
// cannot read another's data dir; Create refuses a clash within a namespace.
func DefaultUser(id string) User {
	h := fnv.New32a()
	h.Write([]byte(id))
	n := userBase + h.Sum32()%userRange
	return User{UID: n, GID: n}
}

// DefaultPidsLimit bounds a container's tasks (processes and threads) unless
// Spec.PidsLimit says otherwise: a collector runs one Go process of a few
// dozen threads; a fork bomb stops here.
const DefaultPidsLimit = 512

// Bounds of what the runtime does on the host for a container: the entries
// of a writable mount it re-owns, and the size of a read-only file it
// copies for a user who could not read it.
const (
	maxOwnedEntries = 200000
	maxCopiedFile   = 1 << 20
)

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
	} else if m, ok := writableMountHolding(s.Mounts, s.LogPath, filepath.Clean); ok {
		errs = append(errs, fmt.Errorf("container %q: log path %q is inside the writable mount %q: the log driver writes as root and must write where the container cannot", s.ID, s.LogPath, m))
	}
	if s.User != nil && s.User.UID == 0 && !s.Privileged {
		errs = append(errs, fmt.Errorf("container %q: user 0 (root) needs privileged: a container that is not privileged runs as another user", s.ID))
	}
	return errors.Join(errs...)
}

// writableMountHolding returns the host source of the writable mount that
// holds p (both passed through resolve first), if any.
func writableMountHolding(mounts []Mount, p string, resolve func(string) string) (string, bool) {
	p = resolve(p)
	for _, m := range mounts {
		if m.ReadOnly {
			continue
		}
		src := resolve(m.Host)
		if p == src || strings.HasPrefix(p, strings.TrimSuffix(src, "/")+"/") {
			return m.Host, true
		}
	}
	return "", false
}

// evalSymlinks resolves as much of p as exists (a log file not created yet
// still has its directory resolved).
func evalSymlinks(p string) string {
	p = filepath.Clean(p)
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	dir := filepath.Dir(p)
	if dir == p {
		return p
	}
	return filepath.Join(evalSymlinks(dir), filepath.Base(p))
}

// user is who s runs as: nil for root.
func (s Spec) user() *User {
	switch {
	case s.User != nil && s.User.UID == 0:
		return nil
	case s.User != nil:
		return s.User
	case s.Privileged:
		return nil
	}
	u := DefaultUser(s.ID)
	return &u
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
// allow rule. Nodes keep the host's owner and mode. For a user other than
// root (u non-nil) it also returns the groups that give u read and write
// access — a serial adapter is reached through its group (dialout) — and
// refuses a device u could not open.
func deviceOpts(devs []Device, u *User) ([]oci.SpecOpts, []uint32, error) {
	var (
		opts   []oci.SpecOpts
		errs   []error
		seen   = map[string]bool{}
		nodes  []specs.LinuxDevice
		binds  []specs.Mount
		allows []specs.LinuxDeviceCgroup
		gids   []uint32
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
		if u != nil {
			gid, err := deviceGroup(d.Host, real, st, *u)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if gid != nil && !containsGid(gids, *gid) {
				gids = append(gids, *gid)
			}
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
		return nil, nil, err
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
	return opts, gids, nil
}

// deviceGroup is the supplementary group u needs to read and write the
// device (nil when it needs none), or an error saying why u cannot.
func deviceGroup(name, real string, st unix.Stat_t, u User) (*uint32, error) {
	const rw = 0o6
	mode := st.Mode & 0o777
	switch {
	case mode&rw == rw: // others
		return nil, nil
	case st.Uid == u.UID && (mode>>6)&rw == rw:
		return nil, nil
	case st.Gid == u.GID && (mode>>3)&rw == rw:
		return nil, nil
	case st.Gid != 0 && (mode>>3)&rw == rw:
		gid := st.Gid
		return &gid, nil
	}
	return nil, fmt.Errorf("device %q (%s, mode %#o, owner %d:%d) cannot be read and written by the collector's user %d: "+
		"a collector that is not privileged reaches a device through its group; give the device a group other than root "+
		"with read and write access (a udev rule such as GROUP=\"dialout\", MODE=\"0660\") or set privileged: true",
		name, real, mode, st.Uid, st.Gid, u.UID)
}

func containsGid(gids []uint32, g uint32) bool {
	for _, x := range gids {
		if x == g {
			return true
		}
	}
	return false
}

// specOpts builds the OCI spec options of s for image img. It also prepares
// the host side of s's mounts for the user it runs as (see prepareMount).
//
// Every container gets: host network, read-only root file system, a /tmp
// tmpfs that is noexec, nosuid and nodev, and a pids limit. One that is not
// privileged also runs as a user other than root with no capability at all
// (not even NET_RAW: on the host network it could sniff or spoof the plant's
// Modbus TCP), no_new_privileges and containerd's default seccomp profile;
// the devices it is given are reached through their groups.
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
	user := s.user()
	if s.Privileged {
		opts = append(opts, oci.WithPrivileged, oci.WithAllDevicesAllowed, oci.WithHostDevices)
	}
	if m, ok := writableMountHolding(s.Mounts, s.LogPath, evalSymlinks); ok {
		return nil, fmt.Errorf("container %q: log path %q resolves into the writable mount %q: the log driver writes as root and must write where the container cannot", s.ID, s.LogPath, m)
	}
	// A writable /tmp on the read-only root; nothing in it can be run.
	mounts := []specs.Mount{{
		Destination: "/tmp", Type: "tmpfs", Source: "tmpfs",
		Options: []string{"nosuid", "nodev", "noexec", "mode=1777", "size=16m"},
	}}
	if err := r.resetPrivate(s.ID); err != nil {
		return nil, err
	}
	var groups []uint32
	devOpts, devGroups, err := deviceOpts(s.Devices, user)
	if err != nil {
		return nil, fmt.Errorf("container %q: %w", s.ID, err)
	}
	groups = append(groups, devGroups...)
	for i, m := range s.Mounts {
		mnt, err := r.prepareMount(s.ID, i, m, user, groups)
		if err != nil {
			return nil, fmt.Errorf("container %q: %w", s.ID, err)
		}
		mounts = append(mounts, mnt)
	}
	opts = append(opts, oci.WithMounts(mounts))
	opts = append(opts, devOpts...)
	if user != nil {
		opts = append(opts,
			withUser(*user, groups),
			oci.WithCapabilities([]string{}),
			oci.WithAmbientCapabilities(nil),
			oci.WithNoNewPrivileges,
			r.withUniqueUser(s.ID, *user),
			// After the capabilities: the profile allows the syscalls they grant.
			seccomp.WithDefaultProfile(),
		)
	}
	pids := s.PidsLimit
	if pids == 0 {
		pids = DefaultPidsLimit
	}
	if pids > 0 {
		opts = append(opts, oci.WithPidsLimit(pids))
	}
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

// withUser runs the process as u with its own group and groups as
// supplementary groups, replacing what the image config said (the images
// have no user; their passwd-less rootfs could not name one anyway).
func withUser(u User, groups []uint32) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if s.Process == nil {
			s.Process = &specs.Process{}
		}
		extra := []uint32{u.GID}
		for _, g := range groups {
			if g != u.GID {
				extra = append(extra, g)
			}
		}
		s.Process.User = specs.User{UID: u.UID, GID: u.GID, AdditionalGids: extra}
		return nil
	}
}

// withUniqueUser refuses a user another container of the namespace runs as:
// two collectors sharing a uid could read each other's data dirs.
func (r *Runtime) withUniqueUser(id string, u User) oci.SpecOpts {
	return func(ctx context.Context, _ oci.Client, _ *containers.Container, _ *oci.Spec) error {
		cs, err := r.client.Containers(ctx)
		if err != nil {
			return fmt.Errorf("container %q: list containers for user ids: %w", id, err)
		}
		for _, c := range cs {
			if c.ID() == id {
				continue
			}
			sp, err := c.Spec(ctx)
			if err != nil || sp.Process == nil {
				continue // deleted meanwhile
			}
			if sp.Process.User.UID == u.UID {
				return fmt.Errorf("container %q would run as uid %d, the uid of container %q: rename one of them", id, u.UID, c.ID())
			}
		}
		return nil
	}
}

// prepareMount turns m into the OCI mount of container id, preparing its
// host side for user u (nil: root) with supplementary groups:
//   - a writable directory is handed to u: owned by u, mode 0700, entries
//     re-owned without following links (nofollow.Own) — it is the
//     container's own, and a collector must be able to write its data dir;
//   - a read-only file u could not read (a 0600 secret, the config file the
//     supervisor writes 0600) is copied, bounded, into the runtime's private
//     dir as u's 0400 file, and the copy is mounted instead;
//   - a read-only directory u could not read is an error naming it.
func (r *Runtime) prepareMount(id string, i int, m Mount, u *User, groups []uint32) (specs.Mount, error) {
	st, err := os.Stat(m.Host)
	if err != nil {
		return specs.Mount{}, fmt.Errorf("mount source: %w", err)
	}
	uid, gid := 0, 0
	if u != nil {
		uid, gid = int(u.UID), int(u.GID)
	}
	src := m.Host
	o := []string{"rbind", "rprivate", "nosuid", "nodev"}
	switch {
	case !m.ReadOnly && st.IsDir():
		if err := nofollow.Own(m.Host, uid, gid, 0o700, maxOwnedEntries); err != nil {
			return specs.Mount{}, fmt.Errorf("writable mount %q: give it to uid %d: %w", m.Host, uid, err)
		}
	case m.ReadOnly && u != nil && !readable(st, *u, groups):
		if st.IsDir() {
			return specs.Mount{}, fmt.Errorf("read-only mount %q (mode %#o, owner %d:%d) cannot be read by the collector's user %d: make it readable by others, or set privileged: true",
				m.Host, st.Mode().Perm(), statUID(st), statGID(st), u.UID)
		}
		if src, err = r.privateCopy(id, i, m, *u); err != nil {
			return specs.Mount{}, err
		}
	}
	if m.ReadOnly {
		o = append(o, "ro")
	} else {
		o = append(o, "rw")
	}
	return specs.Mount{Destination: m.Container, Type: "bind", Source: src, Options: o}, nil
}

func statUID(st os.FileInfo) uint32 { return st.Sys().(*syscall.Stat_t).Uid }
func statGID(st os.FileInfo) uint32 { return st.Sys().(*syscall.Stat_t).Gid }

// readable tells whether u (with groups) may read st — and, for a
// directory, list and enter it.
func readable(st os.FileInfo, u User, groups []uint32) bool {
	want := os.FileMode(0o4)
	if st.IsDir() {
		want = 0o5
	}
	perm := st.Mode().Perm()
	switch {
	case statUID(st) == u.UID:
		return (perm>>6)&want == want
	case statGID(st) == u.GID || containsGid(groups, statGID(st)):
		return (perm>>3)&want == want
	}
	return perm&want == want
}

// privateDir is where copies for container id live: the runtime's private
// dir (WithPrivateDir), never anything a container can write.
func (r *Runtime) privateDir(id string) string {
	if r.private == "" {
		return ""
	}
	return filepath.Join(r.private, id)
}

// resetPrivate empties container id's private dir before its spec is built.
func (r *Runtime) resetPrivate(id string) error {
	if r.private == "" {
		return nil
	}
	if err := os.RemoveAll(r.privateDir(id)); err != nil {
		return fmt.Errorf("container %q: private dir: %w", id, err)
	}
	return nil
}

// removePrivate drops container id's copies (the container is gone).
func (r *Runtime) removePrivate(id string) {
	if r.private != "" {
		_ = os.RemoveAll(r.privateDir(id))
	}
}

// privateCopy copies the read-only file mount m (index i) of container id
// into the private dir as u's own 0400 file and returns the copy's path.
// The source is the operator's or the supervisor's file, read bounded and
// only if regular (a FIFO configured by mistake cannot block this).
func (r *Runtime) privateCopy(id string, i int, m Mount, u User) (string, error) {
	if r.private == "" {
		return "", fmt.Errorf("read-only mount %q cannot be read by the collector's user %d, and the runtime has no private dir to copy it to (WithPrivateDir)", m.Host, u.UID)
	}
	// The source is a host path the operator chose: its links are followed
	// on purpose (a secret kept elsewhere); the file is then read as any.
	real, err := filepath.EvalSymlinks(m.Host)
	if err != nil {
		return "", fmt.Errorf("read-only mount %q: %w", m.Host, err)
	}
	data, err := nofollow.ReadFile(filepath.Dir(real), filepath.Base(real), maxCopiedFile)
	if err != nil {
		return "", fmt.Errorf("read-only mount %q: %w", m.Host, err)
	}
	dir := r.privateDir(id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("private dir: %w", err)
	}
	dst := filepath.Join(dir, fmt.Sprintf("%d-%s", i, path.Base(m.Container)))
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o400)
	if err != nil {
		return "", fmt.Errorf("copy of %q: %w", m.Host, err)
	}
	_, werr := f.Write(data)
	cerr := f.Chown(int(u.UID), int(u.GID))
	if err := errors.Join(werr, cerr, f.Close()); err != nil {
		return "", fmt.Errorf("copy of %q: %w", m.Host, err)
	}
	return dst, nil
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
