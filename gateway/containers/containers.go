// Package containers is the supervisor's container policy on containerd: it
// implements supervisor.Runtime (and supervisor.ImageResolver) over
// fieldgate/runtime. Start is "make it so": create the container, replace it
// when its spec hash (which covers the collector's identity) differs — the
// old task stopped first, so a serial line never has two owners — start its
// task, or adopt a task that runs with the same hash. After a reboot
// containerd lists the containers but no tasks; Start gives them a new task.
package containers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"fieldgate/gateway/config"
	"fieldgate/gateway/supervisor"
	fgruntime "fieldgate/runtime"
)

// DefaultStopTimeout is how long a collector gets between SIGTERM and
// SIGKILL when it is removed or recreated: time to flush its queue.
const DefaultStopTimeout = 10 * time.Second

// Runtime runs collectors as containers of one containerd namespace. Create
// it with Open.
type Runtime struct {
	rt          *fgruntime.Runtime
	log         *slog.Logger
	stopTimeout time.Duration
	// shipped are the digests of the images in images_dir's archives: kept
	// by Prune, since the next start would import them again.
	shipped []string
}

// Option configures a Runtime.
type Option func(*options)

type options struct {
	stopTimeout time.Duration
	runtimeOpts []fgruntime.Option
	imagesDir   *string
}

// WithImagesDir sets the directory whose archives Open imports (default
// runtime.images_dir); "" imports none — an installed firmware slot imports
// the images its manifest pins itself (fieldgate/gateway/update).
func WithImagesDir(dir string) Option { return func(o *options) { o.imagesDir = &dir } }

// WithStopTimeout sets the SIGTERM-to-SIGKILL deadline (default
// DefaultStopTimeout).
func WithStopTimeout(d time.Duration) Option { return func(o *options) { o.stopTimeout = d } }

// WithRuntimeOptions passes options to fieldgate/runtime (log driver, log
// rotation).
func WithRuntimeOptions(opts ...fgruntime.Option) Option {
	return func(o *options) { o.runtimeOpts = append(o.runtimeOpts, opts...) }
}

// Open connects to containerd (runtime.address, runtime.namespace,
// runtime.snapshotter) and imports the image archives of runtime.images_dir.
// An archive that fails to import is logged; the collectors using its images
// then fail to start, each with its own error.
func Open(ctx context.Context, cfg *config.Config, log *slog.Logger, opts ...Option) (*Runtime, error) {
	if log == nil {
		return nil, errors.New("containers: nil logger")
	}
	o := options{stopTimeout: DefaultStopTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	if o.stopTimeout <= 0 {
		return nil, fmt.Errorf("containers: invalid stop timeout %v", o.stopTimeout)
	}
	rt, err := fgruntime.New(cfg.Runtime.Address, cfg.Runtime.Namespace, log,
		append([]fgruntime.Option{
			fgruntime.WithSnapshotter(cfg.Runtime.Snapshotter),
			fgruntime.WithPrivateDir(supervisor.PrivateDir(cfg)),
		}, o.runtimeOpts...)...)
	if err != nil {
		return nil, err
	}
	c := &Runtime{rt: rt, log: log, stopTimeout: o.stopTimeout}
	dir := cfg.Runtime.ImagesDir
	if o.imagesDir != nil {
		dir = *o.imagesDir
	}
	if dir == "" {
		return c, nil
	}
	results, err := rt.ImportDir(ctx, dir)
	for _, r := range results {
		for _, img := range r.Images {
			log.Info("image available", "archive", r.Archive, "image", img.Name, "digest", img.Digest, "skipped", r.Skipped)
			c.shipped = append(c.shipped, img.Digest)
		}
	}
	if err != nil {
		log.Error("image import incomplete", "images_dir", dir, "err", err)
	}
	return c, nil
}

// Close closes the connection; running tasks are not touched.
func (c *Runtime) Close() error { return c.rt.Close() }

// Runtime is the fieldgate/runtime underneath (for logs and tests).
func (c *Runtime) Runtime() *fgruntime.Runtime { return c.rt }

// Containers lists the namespace's containers with their task state.
func (c *Runtime) Containers(ctx context.Context) ([]supervisor.Container, error) {
	list, err := c.rt.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]supervisor.Container, 0, len(list))
	for _, info := range list {
		ct := supervisor.Container{
			Name:    info.ID,
			Labels:  info.Labels,
			Running: running(info.Status),
			Pid:     info.Pid,
		}
		if info.Status == fgruntime.StatusStopped {
			ct.Exited, ct.ExitCode, ct.ExitedAt = true, int(info.ExitCode), info.ExitedAt
		}
		out = append(out, ct)
	}
	return out, nil
}

func running(s fgruntime.TaskStatus) bool {
	return s == fgruntime.StatusRunning || s == fgruntime.StatusPaused
}

// ImageDigest is the digest image ref points to now.
func (c *Runtime) ImageDigest(ctx context.Context, ref string) (string, error) {
	img, err := c.rt.Image(ctx, ref)
	if err != nil {
		return "", err
	}
	return img.Digest, nil
}

// Start makes the container spec.Name exist with spec and its task run (see
// the package doc). A container created from another digest than
// spec.Identity.ImageDigest (the tag moved between the resolution and the
// creation) is deleted again and an error returned: the supervisor retries
// with the identity resolved anew.
func (c *Runtime) Start(ctx context.Context, spec supervisor.Spec) (supervisor.Task, error) {
	hash := spec.Labels[supervisor.LabelSpecHash]
	info, err := c.rt.Load(ctx, spec.Name)
	create := false
	switch {
	case errors.Is(err, fgruntime.ErrNotFound):
		create = true
	case err != nil:
		return nil, err
	case info.Labels[supervisor.LabelSpecHash] != hash:
		c.log.Info("replacing container: spec or identity changed", "collector", spec.Name,
			"old_hash", short(info.Labels[supervisor.LabelSpecHash]), "new_hash", short(hash),
			"old_digest", info.ImageDigest, "new_digest", spec.Identity.ImageDigest)
		if err := c.rt.Stop(ctx, spec.Name, c.stopTimeout); err != nil {
			return nil, err
		}
		create = true
	case running(info.Status):
		started, err := ProcStartTime(info.Pid)
		if err != nil {
			c.log.Warn("adopted task's start time unknown; counting from now", "collector", spec.Name, "pid", info.Pid, "err", err)
			started = time.Now()
		}
		return &task{rt: c.rt, id: spec.Name, info: supervisor.TaskInfo{
			Pid: info.Pid, ImageDigest: info.ImageDigest, StartedAt: started, Adopted: true,
		}}, nil
	case info.Status == fgruntime.StatusCreated || info.Status == fgruntime.StatusUnknown:
		// A task created but never started (the supervisor died in
		// between) cannot be started again: start over.
		if err := c.rt.Delete(ctx, spec.Name); err != nil {
			return nil, err
		}
		create = true
	}
	if create {
		created, err := c.rt.Create(ctx, RuntimeSpec(spec))
		if err != nil {
			return nil, err
		}
		if want := spec.Identity.ImageDigest; want != "" && created.ImageDigest != want {
			if err := c.rt.Delete(ctx, spec.Name); err != nil {
				c.log.Error("delete container of a moved image tag failed", "collector", spec.Name, "err", err)
			}
			return nil, fmt.Errorf("container %q: image %q moved to %s while the container was created from the identity's %s",
				spec.Name, spec.Image, created.ImageDigest, want)
		}
	}
	info, err = c.rt.Start(ctx, spec.Name)
	if err != nil {
		return nil, err
	}
	return &task{rt: c.rt, id: spec.Name, info: supervisor.TaskInfo{
		Pid: info.Pid, ImageDigest: info.ImageDigest, StartedAt: time.Now(),
	}}, nil
}

// Remove stops the collector's task (SIGTERM, SIGKILL after the stop
// timeout) and deletes its container; a missing container is no error.
func (c *Runtime) Remove(ctx context.Context, name string) error {
	return c.rt.Stop(ctx, name, c.stopTimeout)
}

// Prune is a supervisor.PruneFunc: it deletes the images whose digest is
// not in inUse, not shipped in images_dir and not used by a container.
func (c *Runtime) Prune(ctx context.Context, inUse []string) error {
	keep := append(append([]string(nil), inUse...), c.shipped...)
	removed, err := c.rt.PruneImages(ctx, keep)
	if len(removed) > 0 {
		c.log.Info("unused images pruned", "count", len(removed))
	}
	return err
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// RuntimeSpec is the container spec of a collector spec.
func RuntimeSpec(s supervisor.Spec) fgruntime.Spec {
	rs := fgruntime.Spec{
		ID:          s.Name,
		Image:       s.Image,
		Env:         s.Env,
		Privileged:  s.Privileged,
		CPUs:        s.CPUs,
		MemoryBytes: s.Memory,
		Labels:      s.Labels,
		LogPath:     s.LogPath,
	}
	for _, d := range s.Devices {
		rs.Devices = append(rs.Devices, fgruntime.Device{Host: d.Host, Container: d.Container})
	}
	for _, m := range s.Mounts {
		rs.Mounts = append(rs.Mounts, fgruntime.Mount{Host: m.Source, Container: m.Destination, ReadOnly: m.ReadOnly})
	}
	return rs
}

type task struct {
	rt   *fgruntime.Runtime
	id   string
	info supervisor.TaskInfo
}

func (t *task) Info() supervisor.TaskInfo { return t.info }

func (t *task) Wait(ctx context.Context) (supervisor.Exit, error) {
	ch, err := t.rt.Wait(ctx, t.id)
	if err != nil {
		return supervisor.Exit{}, err
	}
	ex, ok := <-ch
	if !ok {
		return supervisor.Exit{}, fmt.Errorf("container %q: wait ended without exit status", t.id)
	}
	if ex.Err != nil {
		if ctx.Err() != nil {
			return supervisor.Exit{}, ctx.Err()
		}
		return supervisor.Exit{}, ex.Err
	}
	return supervisor.Exit{Code: int(ex.Code), At: ex.At}, nil
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's starttime: 100 on every
// Linux architecture fieldgate ships for.
const clockTicks = 100

// ProcStartTime is when process pid started, from /proc/PID/stat and the
// boot time in /proc/stat (for an adopted task, whose start the supervisor
// did not see). Anything it cannot read or parse is an error naming it.
func ProcStartTime(pid uint32) (time.Time, error) {
	return procStartTime("/proc", pid)
}

func procStartTime(proc string, pid uint32) (time.Time, error) {
	statPath := fmt.Sprintf("%s/%d/stat", proc, pid)
	stat, err := os.ReadFile(statPath)
	if err != nil {
		return time.Time{}, fmt.Errorf("process start time: %w", err)
	}
	// Field 22 (starttime, clock ticks since boot) counts from after the
	// command name, which is in parentheses and may hold spaces.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return time.Time{}, fmt.Errorf("process start time: %s: no command name", statPath)
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 20 {
		return time.Time{}, fmt.Errorf("process start time: %s: %d fields after the command name, want at least 20", statPath, len(fields))
	}
	ticks, err := strconv.ParseInt(fields[19], 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("process start time: %s: starttime: %w", statPath, err)
	}
	procStat, err := os.ReadFile(proc + "/stat")
	if err != nil {
		return time.Time{}, fmt.Errorf("process start time: %w", err)
	}
	for _, line := range strings.Split(string(procStat), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			btime, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, fmt.Errorf("process start time: %s/stat: btime: %w", proc, err)
			}
			return time.Unix(btime, 0).Add(time.Duration(ticks) * time.Second / clockTicks), nil
		}
	}
	return time.Time{}, fmt.Errorf("process start time: %s/stat has no btime line", proc)
}
