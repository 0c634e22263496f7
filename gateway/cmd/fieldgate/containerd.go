package main

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

// stopTimeout is how long a collector gets between SIGTERM and SIGKILL when
// it is removed or recreated.
const stopTimeout = 10 * time.Second

// containerdRuntime adapts fieldgate/runtime to the supervisor's Runtime:
// Start is "make it so" (create, replace on a spec-hash change, start, or
// adopt a running task).
type containerdRuntime struct {
	rt  *fgruntime.Runtime
	log *slog.Logger
}

// openRuntime connects to containerd (opts after the configured snapshotter).
func openRuntime(cfg *config.Config, log *slog.Logger, opts ...fgruntime.Option) (*containerdRuntime, error) {
	rt, err := fgruntime.New(cfg.Runtime.Address, cfg.Runtime.Namespace, log,
		append([]fgruntime.Option{fgruntime.WithSnapshotter(cfg.Runtime.Snapshotter),
			fgruntime.WithPrivateDir(supervisor.PrivateDir(cfg))}, opts...)...)
	if err != nil {
		return nil, err
	}
	return &containerdRuntime{rt: rt, log: log}, nil
}

// importDir imports the image archives of dir. An archive that fails to
// import is logged; the collectors using its images then fail to start, each
// with its own error.
func (c *containerdRuntime) importDir(ctx context.Context, dir string) {
	results, err := c.rt.ImportDir(ctx, dir)
	for _, r := range results {
		for _, img := range r.Images {
			c.log.Info("image available", "archive", r.Archive, "image", img.Name, "digest", img.Digest, "skipped", r.Skipped)
		}
	}
	if err != nil {
		c.log.Error("image import incomplete", "images_dir", dir, "err", err)
	}
}

func (c *containerdRuntime) Close() error { return c.rt.Close() }

func (c *containerdRuntime) Containers(ctx context.Context) ([]supervisor.Container, error) {
	list, err := c.rt.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]supervisor.Container, 0, len(list))
	for _, info := range list {
		out = append(out, supervisor.Container{
			Name:    info.ID,
			Labels:  info.Labels,
			Running: running(info.Status),
			Pid:     info.Pid,
		})
	}
	return out, nil
}

func running(s fgruntime.TaskStatus) bool {
	return s == fgruntime.StatusRunning || s == fgruntime.StatusPaused
}

func (c *containerdRuntime) Start(ctx context.Context, spec supervisor.Spec) (supervisor.Task, error) {
	hash := spec.Labels[supervisor.LabelSpecHash]
	info, err := c.rt.Load(ctx, spec.Name)
	create := false
	switch {
	case errors.Is(err, fgruntime.ErrNotFound):
		create = true
	case err != nil:
		return nil, err
	case info.Labels[supervisor.LabelSpecHash] != hash:
		c.log.Info("replacing container: spec changed", "collector", spec.Name,
			"old_hash", short(info.Labels[supervisor.LabelSpecHash]), "new_hash", short(hash))
		if err := c.rt.Stop(ctx, spec.Name, stopTimeout); err != nil {
			return nil, err
		}
		create = true
	case running(info.Status):
		return &containerdTask{rt: c.rt, id: spec.Name, info: supervisor.TaskInfo{
			Pid: info.Pid, ImageDigest: info.ImageDigest, StartedAt: procStartTime(info.Pid), Adopted: true,
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
		if _, err := c.rt.Create(ctx, runtimeSpec(spec)); err != nil {
			return nil, err
		}
	}
	info, err = c.rt.Start(ctx, spec.Name)
	if err != nil {
		return nil, err
	}
	return &containerdTask{rt: c.rt, id: spec.Name, info: supervisor.TaskInfo{
		Pid: info.Pid, ImageDigest: info.ImageDigest, StartedAt: time.Now(),
	}}, nil
}

func (c *containerdRuntime) Remove(ctx context.Context, name string) error {
	return c.rt.Stop(ctx, name, stopTimeout)
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

func runtimeSpec(s supervisor.Spec) fgruntime.Spec {
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

type containerdTask struct {
	rt   *fgruntime.Runtime
	id   string
	info supervisor.TaskInfo
}

func (t *containerdTask) Info() supervisor.TaskInfo { return t.info }

func (t *containerdTask) Wait(ctx context.Context) (supervisor.Exit, error) {
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

// procStartTime is when process pid started, from /proc (for adopted tasks,
// whose start the supervisor did not see); now if it cannot be read.
func procStartTime(pid uint32) time.Time {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return time.Now()
	}
	// Field 22 (starttime, clock ticks since boot) counts from after the
	// command name, which is in parentheses and may hold spaces.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return time.Now()
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 20 {
		return time.Now()
	}
	ticks, err := strconv.ParseInt(fields[19], 10, 64)
	if err != nil {
		return time.Now()
	}
	procStat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Now()
	}
	for _, line := range strings.Split(string(procStat), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			btime, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				break
			}
			const clockTicks = 100 // USER_HZ: 100 on every Linux architecture we ship
			return time.Unix(btime, 0).Add(time.Duration(ticks) * time.Second / clockTicks)
		}
	}
	return time.Now()
}
