package runtime

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/errdefs"

	"fieldgate/runtime/logrotate"
)

// ErrNotFound is wrapped when a container does not exist.
var ErrNotFound = errors.New("container not found")

// TaskStatus is the state of a container's task.
type TaskStatus string

// Task states. StatusNone: the container exists without a task.
const (
	StatusNone    TaskStatus = "none"
	StatusCreated TaskStatus = "created"
	StatusRunning TaskStatus = "running"
	StatusPaused  TaskStatus = "paused"
	StatusStopped TaskStatus = "stopped"
	StatusUnknown TaskStatus = "unknown"
)

// ContainerInfo describes a container and its task.
type ContainerInfo struct {
	ID string
	// Image is the normalised image name the container was created from.
	Image string
	// ImageDigest is the image's target digest at creation.
	ImageDigest string
	Labels      map[string]string
	CreatedAt   time.Time
	Status      TaskStatus
	// Pid is the task's init process on the host (0 without a task).
	Pid uint32
	// ExitCode and ExitedAt are set when Status is StatusStopped.
	ExitCode uint32
	ExitedAt time.Time
	// LogPath is the container's log file.
	LogPath string
}

// Exit is a task's end.
type Exit struct {
	Code uint32
	At   time.Time
	// Err is set when waiting failed (e.g. the context ended): Code and At
	// are then meaningless.
	Err error
}

// killWait bounds the wait for a task's exit after SIGKILL (a process stuck
// in the kernel does not die).
const killWait = 10 * time.Second

// labelImageDigest records the image digest a container was created from.
const labelImageDigest = "fieldgate.runtime/image-digest"

// Create creates the container described by s (no task yet; see Start). The
// image must be present; it is unpacked if needed. A container with the same
// ID is an error: Stop (or Delete) it first.
func (r *Runtime) Create(ctx context.Context, s Spec) (ContainerInfo, error) {
	if err := s.Validate(); err != nil {
		return ContainerInfo{}, err
	}
	ctx = r.ctx(ctx)
	img, err := r.image(ctx, s.Image)
	if err != nil {
		return ContainerInfo{}, fmt.Errorf("container %q: %w", s.ID, err)
	}
	if err := r.unpack(ctx, img.Name()); err != nil {
		return ContainerInfo{}, fmt.Errorf("container %q: %w", s.ID, err)
	}
	if _, err := r.client.LoadContainer(ctx, s.ID); err == nil {
		return ContainerInfo{}, fmt.Errorf("container %q already exists: %w", s.ID, errdefs.ErrAlreadyExists)
	}
	// A snapshot left by a container whose deletion failed half-way would
	// block the new one.
	snaps := r.client.SnapshotService(r.snapshotter)
	if _, err := snaps.Stat(ctx, s.ID); err == nil {
		if err := snaps.Remove(ctx, s.ID); err != nil {
			return ContainerInfo{}, fmt.Errorf("container %q: remove leftover snapshot: %w", s.ID, err)
		}
	}
	opts, err := r.specOpts(s, img)
	if err != nil {
		return ContainerInfo{}, err
	}
	labels := copyLabels(s.Labels,
		LabelManaged, "true",
		LabelLogPath, s.LogPath,
		labelImageDigest, img.Target().Digest.String())
	c, err := r.client.NewContainer(ctx, s.ID,
		containerd.WithImage(img),
		containerd.WithSnapshotter(r.snapshotter),
		containerd.WithNewSnapshot(s.ID, img),
		containerd.WithRuntime("io.containerd.runc.v2", nil),
		containerd.WithNewSpec(opts...),
		containerd.WithContainerLabels(labels),
	)
	if err != nil {
		return ContainerInfo{}, fmt.Errorf("create container %q: %w", s.ID, err)
	}
	return r.info(ctx, c)
}

// Start starts the container's task and returns its state (with the pid).
// A stopped task left from a previous run, or one created but never started,
// is deleted first; a running or paused one is an error. The task's output goes to the container's log (see package
// doc): the log driver is running before the task starts.
func (r *Runtime) Start(ctx context.Context, id string) (ContainerInfo, error) {
	ctx = r.ctx(ctx)
	c, err := r.container(ctx, id)
	if err != nil {
		return ContainerInfo{}, err
	}
	if task, err := c.Task(ctx, nil); err == nil {
		st, err := task.Status(ctx)
		if err != nil {
			return ContainerInfo{}, fmt.Errorf("container %q: task status: %w", id, err)
		}
		switch st.Status {
		case containerd.Stopped:
			if _, err := task.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
				return ContainerInfo{}, fmt.Errorf("container %q: delete stopped task: %w", id, err)
			}
		case containerd.Created:
			// Created but never started: the caller died in between. The
			// task's IO belongs to that attempt; start over.
			if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
				return ContainerInfo{}, fmt.Errorf("container %q: delete unstarted task: %w", id, err)
			}
		default:
			return ContainerInfo{}, fmt.Errorf("container %q: task is %s already", id, st.Status)
		}
	} else if !errdefs.IsNotFound(err) {
		return ContainerInfo{}, fmt.Errorf("container %q: task: %w", id, err)
	} else if err := r.reapShim(ctx, id); err != nil {
		return ContainerInfo{}, err
	}
	labels, err := c.Labels(ctx)
	if err != nil {
		return ContainerInfo{}, fmt.Errorf("container %q: labels: %w", id, err)
	}
	logPath := labels[LabelLogPath]
	if logPath == "" {
		return ContainerInfo{}, fmt.Errorf("container %q has no %s label (not created by fieldgate)", id, LabelLogPath)
	}
	task, err := c.NewTask(ctx, cio.BinaryIO(r.logDriver, r.logDriverArgs(logPath)))
	if err != nil {
		return ContainerInfo{}, fmt.Errorf("container %q: create task: %w", id, err)
	}
	if err := task.Start(ctx); err != nil {
		// Not with ctx: a caller's cancelled context would leave the task
		// (and its shim) behind.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), killWait)
		_, _ = task.Delete(dctx, containerd.WithProcessKill)
		cancel()
		return ContainerInfo{}, fmt.Errorf("container %q: start task: %w", id, err)
	}
	r.log.Info("task started", "container", id, "pid", task.Pid())
	return r.info(ctx, c)
}

// Wait returns a channel that receives the task's exit once (also if it had
// exited already) and is then closed. It ends early, with Exit.Err set, when
// ctx ends.
func (r *Runtime) Wait(ctx context.Context, id string) (<-chan Exit, error) {
	ctx = r.ctx(ctx)
	c, err := r.container(ctx, id)
	if err != nil {
		return nil, err
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("container %q: task: %w", id, err)
	}
	st, err := task.Wait(ctx)
	if err != nil {
		return nil, fmt.Errorf("container %q: wait: %w", id, err)
	}
	out := make(chan Exit, 1)
	go func() { // ends when containerd reports the exit or ctx ends
		defer close(out)
		select {
		case s := <-st:
			code, at, err := s.Result()
			out <- Exit{Code: code, At: at, Err: err}
		case <-ctx.Done():
			out <- Exit{Err: ctx.Err()}
		}
	}()
	return out, nil
}

// Kill sends sig to the task's processes.
func (r *Runtime) Kill(ctx context.Context, id string, sig syscall.Signal) error {
	ctx = r.ctx(ctx)
	c, err := r.container(ctx, id)
	if err != nil {
		return err
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		return fmt.Errorf("container %q: task: %w", id, err)
	}
	if err := task.Kill(ctx, sig, containerd.WithKillAll); err != nil {
		return fmt.Errorf("container %q: kill %v: %w", id, sig, err)
	}
	return nil
}

// Stop ends the container: SIGTERM, SIGKILL if the task has not exited after
// timeout, then it deletes the task, the container and its snapshot. A
// missing container is not an error. Every wait is bounded by ctx.
func (r *Runtime) Stop(ctx context.Context, id string, timeout time.Duration) error {
	ctx = r.ctx(ctx)
	c, err := r.client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("container %q: %w", id, err)
	}
	task, err := c.Task(ctx, nil)
	switch {
	case errdefs.IsNotFound(err):
		if err := r.reapShim(ctx, id); err != nil {
			r.log.Error("leftover shim not shut down", "container", id, "err", err)
		}
	case err != nil:
		return fmt.Errorf("container %q: task: %w", id, err)
	default:
		if err := r.stopTask(ctx, id, task, timeout); err != nil {
			return err
		}
	}
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete container %q: %w", id, err)
	}
	r.removePrivate(id)
	r.log.Info("container removed", "container", id)
	return nil
}

func (r *Runtime) stopTask(ctx context.Context, id string, task containerd.Task, timeout time.Duration) error {
	st, err := task.Status(ctx)
	if err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("container %q: task status: %w", id, err)
	}
	if err == nil && st.Status != containerd.Stopped {
		exited, err := task.Wait(ctx)
		if err != nil {
			return fmt.Errorf("container %q: wait: %w", id, err)
		}
		sig := syscall.SIGTERM
		if timeout <= 0 {
			sig = syscall.SIGKILL
		}
		if err := task.Kill(ctx, sig); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("container %q: kill %v: %w", id, sig, err)
		}
		timer := time.NewTimer(timeout)
		defer timer.Stop()
		select {
		case <-exited:
		case <-ctx.Done():
			return fmt.Errorf("container %q: stop: %w", id, ctx.Err())
		case <-timer.C:
			r.log.Warn("task ignored SIGTERM; killing", "container", id, "timeout", timeout)
			if err := task.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll); err != nil && !errdefs.IsNotFound(err) {
				return fmt.Errorf("container %q: kill SIGKILL: %w", id, err)
			}
			select {
			case <-exited:
			case <-ctx.Done():
				return fmt.Errorf("container %q: stop after SIGKILL: %w", id, ctx.Err())
			case <-time.After(killWait):
				return fmt.Errorf("container %q: task still running %s after SIGKILL", id, killWait)
			}
		}
	}
	if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("container %q: delete task: %w", id, err)
	}
	return nil
}

// Delete removes the container at once: its task is killed (SIGKILL), then
// task, container and snapshot are deleted. Missing is not an error.
func (r *Runtime) Delete(ctx context.Context, id string) error {
	return r.Stop(ctx, id, 0)
}

// Load returns a container's state: the way to adopt a running task after a
// supervisor restart (pid and labels as they were set at creation).
func (r *Runtime) Load(ctx context.Context, id string) (ContainerInfo, error) {
	ctx = r.ctx(ctx)
	c, err := r.container(ctx, id)
	if err != nil {
		return ContainerInfo{}, err
	}
	return r.info(ctx, c)
}

// List returns every container in the namespace, sorted by ID.
func (r *Runtime) List(ctx context.Context) ([]ContainerInfo, error) {
	ctx = r.ctx(ctx)
	cs, err := r.client.Containers(ctx)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	out := make([]ContainerInfo, 0, len(cs))
	for _, c := range cs {
		info, err := r.info(ctx, c)
		if errdefs.IsNotFound(err) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Logs returns up to n last lines of a container's log (current and rotated
// files). It needs the container only to find the log path.
func (r *Runtime) Logs(ctx context.Context, id string, n int) ([]string, error) {
	info, err := r.Load(ctx, id)
	if err != nil {
		return nil, err
	}
	return logrotate.LastLines(info.LogPath, n)
}

func (r *Runtime) container(ctx context.Context, id string) (containerd.Container, error) {
	c, err := r.client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("container %q in namespace %q: %w", id, r.namespace, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("container %q: %w", id, err)
	}
	return c, nil
}

func (r *Runtime) info(ctx context.Context, c containerd.Container) (ContainerInfo, error) {
	ci, err := c.Info(ctx, containerd.WithoutRefreshedMetadata)
	if err != nil {
		return ContainerInfo{}, fmt.Errorf("container %q: %w", c.ID(), err)
	}
	info := ContainerInfo{
		ID:          ci.ID,
		Image:       ci.Image,
		ImageDigest: ci.Labels[labelImageDigest],
		Labels:      ci.Labels,
		CreatedAt:   ci.CreatedAt,
		Status:      StatusNone,
		LogPath:     ci.Labels[LabelLogPath],
	}
	task, err := c.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return info, nil
	}
	if err != nil {
		return ContainerInfo{}, fmt.Errorf("container %q: task: %w", c.ID(), err)
	}
	info.Pid = task.Pid()
	st, err := task.Status(ctx)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return info, nil
		}
		return ContainerInfo{}, fmt.Errorf("container %q: task status: %w", c.ID(), err)
	}
	switch st.Status {
	case containerd.Created:
		info.Status = StatusCreated
	case containerd.Running:
		info.Status = StatusRunning
	case containerd.Paused, containerd.Pausing:
		info.Status = StatusPaused
	case containerd.Stopped:
		info.Status = StatusStopped
		info.ExitCode, info.ExitedAt = st.ExitStatus, st.ExitTime
	default:
		info.Status = StatusUnknown
	}
	return info, nil
}

func (r *Runtime) logDriverArgs(logPath string) map[string]string {
	return map[string]string{
		logDriverKey:         logPath,
		logDriverKeyMaxBytes: strconv.FormatInt(r.logMaxBytes, 10),
		logDriverKeyFiles:    strconv.Itoa(r.logFiles),
	}
}
