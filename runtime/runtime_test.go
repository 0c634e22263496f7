package runtime_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"fieldgate/firmware/ociimage"
	"fieldgate/internal/testpeer"
	fgrt "fieldgate/runtime"
)

// TestMain lets this test binary serve as the tasks' log driver: the runtime
// defaults to os.Executable(), which in tests is the test binary.
func TestMain(m *testing.M) {
	if fgrt.IsLogDriver(os.Args[1:]) {
		if err := fgrt.RunLogDriver(os.Args[1:]); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := m.Run()
	if probeDir != "" {
		os.RemoveAll(probeDir)
	}
	os.Exit(code)
}

const probeImage = "fieldgate/test-probe:latest"

var (
	probeOnce sync.Once
	probeDir  string // holds probe.tar, the only archive
	probeErr  error
)

// probeImagesDir builds testdata/probe for this host and packs it into an
// image archive, once per test binary; it returns the archive's directory.
func probeImagesDir(t testing.TB) string {
	t.Helper()
	probeOnce.Do(func() {
		probeDir, probeErr = os.MkdirTemp("", "fgprobe-")
		if probeErr != nil {
			return
		}
		bin := filepath.Join(probeDir, "bin", "probe")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./testdata/probe")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			probeErr = fmt.Errorf("build probe: %v\n%s", err, out)
			return
		}
		platform := hostPlatform()
		imgDir := filepath.Join(probeDir, "images")
		if probeErr = os.MkdirAll(imgDir, 0o755); probeErr != nil {
			return
		}
		_, probeErr = ociimage.Build(ociimage.Config{
			Name: "fieldgate/test-probe", Tags: []string{"0.1", "latest"},
			Binaries: map[string]string{platform: bin},
		}, filepath.Join(imgDir, "probe.tar"))
	})
	if probeErr != nil {
		t.Fatal(probeErr)
	}
	return filepath.Join(probeDir, "images")
}

// hostPlatform is this host's platform as ociimage names it.
func hostPlatform() string {
	if goruntime.GOARCH == "arm" {
		return "linux/arm/v7"
	}
	return "linux/" + goruntime.GOARCH
}

type tlogWriter struct{ t testing.TB }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// setup starts a private containerd, imports the probe image and returns a
// Runtime on it.
func setup(t testing.TB) (*testpeer.ContainerdPeer, *fgrt.Runtime) {
	t.Helper()
	peer := testpeer.Containerd(t)
	rt := newRuntime(t, peer)
	if _, err := rt.ImportDir(context.Background(), probeImagesDir(t)); err != nil {
		t.Fatal(err)
	}
	return peer, rt
}

func newRuntime(t testing.TB, peer *testpeer.ContainerdPeer, opts ...fgrt.Option) *fgrt.Runtime {
	t.Helper()
	rt, err := fgrt.New(peer.Address, peer.Namespace, testLogger(t),
		append([]fgrt.Option{fgrt.WithSnapshotter(peer.Snapshotter)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

// probeSpec is a spec for the probe with its own data dir and log; it
// returns the spec and the data dir.
func probeSpec(t testing.TB, id string, env ...string) (fgrt.Spec, string) {
	t.Helper()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "collector.yaml")
	if err := os.WriteFile(cfg, []byte("transport: tcp\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return fgrt.Spec{
		ID:    id,
		Image: probeImage,
		Env:   append([]string{"DATA_DIR=" + fgrt.DataPath, "COLLECTOR_CONFIG=" + fgrt.ConfigPath}, env...),
		Mounts: []fgrt.Mount{
			{Host: cfg, Container: fgrt.ConfigPath, ReadOnly: true},
			{Host: data, Container: fgrt.DataPath},
		},
		Labels:  map[string]string{"fieldgate/spec-hash": "abc123"},
		LogPath: filepath.Join(dir, "logs", id+".log"),
	}, data
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func waitFile(t testing.TB, path string) string {
	t.Helper()
	testpeer.WaitFor(t, 20*time.Second, "file "+path, func() bool {
		_, err := os.Stat(path)
		return err == nil
	})
	return readFile(path)
}

func waitLog(t testing.TB, rt *fgrt.Runtime, id, want string) []string {
	t.Helper()
	var lines []string
	testpeer.WaitFor(t, 20*time.Second, fmt.Sprintf("%q in the log of %s", want, id), func() bool {
		var err error
		lines, err = rt.Logs(context.Background(), id, 1000)
		return err == nil && slices.Contains(lines, want)
	})
	return lines
}

func TestImportDirSkipsByDigestAndNamesAbsentImages(t *testing.T) {
	peer := testpeer.Containerd(t)
	rt := newRuntime(t, peer)
	ctx := context.Background()
	dir := t.TempDir()
	data, err := os.ReadFile(filepath.Join(probeImagesDir(t), "probe.tar"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "probe.tar"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "README"), []byte("not an archive"), 0o644); err != nil {
		t.Fatal(err)
	}

	first, err := rt.ImportDir(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != 1 || first[0].Skipped || len(first[0].Images) != 2 {
		t.Fatalf("first import: %+v", first)
	}
	second, err := rt.ImportDir(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(second) != 1 || !second[0].Skipped {
		t.Fatalf("second import not skipped: %+v", second)
	}

	img, err := rt.Image(ctx, "fieldgate/test-probe")
	if err != nil {
		t.Fatal(err)
	}
	if img.Name != "docker.io/fieldgate/test-probe:latest" || img.Digest != first[0].Images[0].Digest {
		t.Errorf("image %+v, want docker.io/fieldgate/test-probe:latest at %s", img, first[0].Images[0].Digest)
	}

	_, err = rt.Image(ctx, "fieldgate/collector-absent:2.0")
	if !errors.Is(err, fgrt.ErrImageNotFound) || !strings.Contains(err.Error(), `"fieldgate/collector-absent:2.0"`) {
		t.Errorf("absent image: %v", err)
	}

	// A new build under the same names (an upgrade) is imported and moves them.
	bin := filepath.Join(filepath.Dir(probeImagesDir(t)), "bin", "probe")
	newer, err := ociimage.Build(ociimage.Config{
		Name: "fieldgate/test-probe", Tags: []string{"0.1", "latest"},
		Binaries: map[string]string{hostPlatform(): bin}, Created: time.Unix(1e9, 0),
	}, filepath.Join(dir, "probe.tar"))
	if err != nil {
		t.Fatal(err)
	}
	third, err := rt.ImportDir(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(third) != 1 || third[0].Skipped {
		t.Fatalf("import of a new build skipped: %+v", third)
	}
	if img, err := rt.Image(ctx, "fieldgate/test-probe:latest"); err != nil || img.Digest != newer.IndexDigest || img.Digest == first[0].Images[0].Digest {
		t.Errorf("after upgrade: %+v, %v; want digest %s", img, err, newer.IndexDigest)
	}

	// A broken archive is an error naming it; the good one still counts.
	if err := os.WriteFile(filepath.Join(dir, "broken.tar"), []byte("garbage, not a tar"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := rt.ImportDir(ctx, dir)
	if err == nil || !strings.Contains(err.Error(), "broken.tar") {
		t.Errorf("broken archive: err %v", err)
	}
	if len(res) != 1 || !res[0].Skipped {
		t.Errorf("good archive alongside a broken one: %+v", res)
	}
}

func TestContainerSeesEnvMountsReadOnlyRootAndLogs(t *testing.T) {
	_, rt := setup(t)
	ctx := context.Background()
	spec, data := probeSpec(t, "probe-env", "POLL_INTERVAL=5s", "MQTT_BROKER=tcp://127.0.0.1:1883")
	created, err := rt.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if created.Status != fgrt.StatusNone || created.Image != "docker.io/fieldgate/test-probe:latest" {
		t.Errorf("after create: %+v", created)
	}
	started, err := rt.Start(ctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if started.Status != fgrt.StatusRunning || started.Pid == 0 {
		t.Fatalf("after start: %+v", started)
	}

	var report struct {
		Env         []string `json:"env"`
		Config      string   `json:"config"`
		ConfigError string   `json:"config_error"`
		ConfigWrite string   `json:"config_write"`
		RootfsWrite string   `json:"rootfs_write"`
		TmpWrite    string   `json:"tmp_write"`
		Hostname    string   `json:"hostname"`
	}
	if err := json.Unmarshal([]byte(waitFile(t, filepath.Join(data, "report.json"))), &report); err != nil {
		t.Fatal(err)
	}
	for _, e := range spec.Env {
		if !slices.Contains(report.Env, e) {
			t.Errorf("env %q missing inside: %q", e, report.Env)
		}
	}
	if report.Config != "transport: tcp\n" {
		t.Errorf("config file inside: %q (error %q)", report.Config, report.ConfigError)
	}
	// Not root: the write is refused (EACCES) before the read-only mount is
	// even asked (EROFS).
	if !strings.Contains(report.ConfigWrite, "read-only file system") && !strings.Contains(report.ConfigWrite, "permission denied") {
		t.Errorf("writing the config file: %q, want read-only file system or permission denied", report.ConfigWrite)
	}
	if !strings.Contains(report.RootfsWrite, "read-only file system") {
		t.Errorf("writing the root fs: %q, want read-only file system", report.RootfsWrite)
	}
	if report.TmpWrite != "" {
		t.Errorf("writing /tmp: %q, want success", report.TmpWrite)
	}
	host, _ := os.Hostname()
	if report.Hostname != host {
		t.Errorf("hostname inside %q, want the host's %q", report.Hostname, host)
	}

	lines := waitLog(t, rt, spec.ID, "probe started")
	if !slices.Contains(lines, "probe stderr") {
		t.Errorf("stderr line missing from log: %q", lines)
	}

	if err := rt.Stop(ctx, spec.ID, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Load(ctx, spec.ID); !errors.Is(err, fgrt.ErrNotFound) {
		t.Errorf("load after stop: %v, want ErrNotFound", err)
	}
	// The driver drains the pipes before it exits: the SIGTERM handler's
	// last line is in the file once Stop has returned.
	lines, err = rt.Logs(ctx, spec.ID, 10)
	if !errors.Is(err, fgrt.ErrNotFound) {
		t.Errorf("logs of a removed container: %v", err)
	}
	testpeer.WaitFor(t, 10*time.Second, "probe stopping in the log file", func() bool {
		return strings.Contains(readFile(spec.LogPath), "probe stopping\n")
	})
	if err := rt.Stop(ctx, spec.ID, time.Second); err != nil {
		t.Errorf("stop of a removed container: %v, want nil", err)
	}
}

func TestStopKillsAfterTimeoutAndStartRestartsStoppedTask(t *testing.T) {
	peer, rt := setup(t)
	ctx := context.Background()
	spec, _ := probeSpec(t, "probe-stubborn", "PROBE_IGNORE_TERM=1")
	if _, err := rt.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	first, err := rt.Start(ctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Start(ctx, spec.ID); err == nil || !strings.Contains(err.Error(), "already") {
		t.Errorf("second start of a running task: %v", err)
	}
	exited, err := rt.Wait(ctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Kill(ctx, spec.ID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ex := <-exited
	if ex.Err != nil || ex.Code != 137 {
		t.Errorf("exit after SIGKILL: %+v, want code 137", ex)
	}
	info, err := rt.Load(ctx, spec.ID)
	if err != nil || info.Status != fgrt.StatusStopped || info.ExitCode != 137 {
		t.Errorf("after exit: %+v, %v", info, err)
	}
	// Start again on the same container: the stopped task is replaced.
	second, err := rt.Start(ctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if second.Pid == first.Pid || second.Status != fgrt.StatusRunning {
		t.Errorf("restart: %+v (first pid %d)", second, first.Pid)
	}
	waitLog(t, rt, spec.ID, "probe started")

	// A task created but never started (a supervisor that died between the
	// two calls) is replaced by Start.
	if err := rt.Stop(ctx, spec.ID, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	client, err := containerd.New(peer.Address, containerd.WithDefaultNamespace(peer.Namespace))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c, err := client.LoadContainer(ctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.NewTask(ctx, cio.NullIO); err != nil {
		t.Fatal(err)
	}
	if info, err := rt.Load(ctx, spec.ID); err != nil || info.Status != fgrt.StatusCreated {
		t.Fatalf("before start: %+v, %v", info, err)
	}
	second, err = rt.Start(ctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	waitLog(t, rt, spec.ID, "probe started")

	// It ignores SIGTERM: Stop must fall back to SIGKILL after the timeout.
	stopCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := rt.Stop(stopCtx, spec.ID, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(int(second.Pid), 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("pid %d still exists after Stop: %v", second.Pid, err)
	}
	list, err := rt.List(ctx)
	if err != nil || len(list) != 0 {
		t.Errorf("containers after stop: %+v, %v", list, err)
	}
}

// TestDevicesReachableInside maps a socat pty (devpts: bind-mounted) and a
// plain character device (/dev/zero: mknod) to other container paths, with
// and without privileged mode, and moves data across.
func TestDevicesReachableInside(t *testing.T) {
	_, rt := setup(t)
	ctx := context.Background()
	for _, privileged := range []bool{false, true} {
		t.Run(fmt.Sprintf("pty privileged=%v", privileged), func(t *testing.T) {
			slave, other := testpeer.PtyPair(t)
			id := fmt.Sprintf("probe-pty-%v", privileged)
			spec, data := probeSpec(t, id, "PROBE_DEVICE=/dev/ttyUSB0")
			spec.Privileged = privileged
			spec.Devices = []fgrt.Device{{Host: slave, Container: "/dev/ttyUSB0"}}
			if _, err := rt.Create(ctx, spec); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = rt.Stop(context.Background(), id, time.Second) })
			if _, err := rt.Start(ctx, id); err != nil {
				t.Fatal(err)
			}
			if got := waitFile(t, filepath.Join(data, "device-open")); got != "ok" {
				t.Fatalf("opening /dev/ttyUSB0 inside: %s", got)
			}
			f, err := os.OpenFile(other, os.O_RDWR|syscall.O_NOCTTY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.Write([]byte("ping\n")); err != nil {
				t.Fatal(err)
			}
			if got := waitFile(t, filepath.Join(data, "device.txt")); got != "ping\n" {
				t.Errorf("read inside: %q, want %q", got, "ping\n")
			}
			_ = f.SetReadDeadline(time.Now().Add(10 * time.Second))
			buf := make([]byte, 5)
			n, err := f.Read(buf)
			if err != nil || string(buf[:n]) != "pong\n" {
				t.Errorf("read from the container through the pty: %q, %v", buf[:n], err)
			}
		})
	}
	t.Run("char device mknod", func(t *testing.T) {
		spec, data := probeSpec(t, "probe-zero", "PROBE_DEVICE=/dev/ttyUSB7", "PROBE_DEVICE_READ=bytes")
		spec.Devices = []fgrt.Device{{Host: "/dev/zero", Container: "/dev/ttyUSB7"}}
		if _, err := rt.Create(ctx, spec); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = rt.Stop(context.Background(), spec.ID, time.Second) })
		if _, err := rt.Start(ctx, spec.ID); err != nil {
			t.Fatal(err)
		}
		if got := waitFile(t, filepath.Join(data, "device-open")); got != "ok" {
			t.Fatalf("opening /dev/ttyUSB7 inside: %s", got)
		}
		if got := waitFile(t, filepath.Join(data, "device.txt")); got != "00000000" {
			t.Errorf("read inside: %q, want 00000000", got)
		}
	})
	t.Run("missing device", func(t *testing.T) {
		spec, _ := probeSpec(t, "probe-nodev")
		spec.Devices = []fgrt.Device{{Host: "/dev/ttyUSB-none", Container: "/dev/ttyUSB0"}}
		_, err := rt.Create(ctx, spec)
		if err == nil || !strings.Contains(err.Error(), `device "/dev/ttyUSB-none"`) {
			t.Errorf("create with a missing device: %v", err)
		}
	})
}

// cgroupFile reads a cgroup v1 controller file (or its v2 equivalent) of pid.
func cgroupFile(t *testing.T, pid uint32, controller, v1name, v2name string) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == controller {
				return strings.TrimSpace(readFile(filepath.Join("/sys/fs/cgroup", controller, parts[2], v1name)))
			}
		}
		if parts[0] == "0" && parts[1] == "" {
			return strings.TrimSpace(readFile(filepath.Join("/sys/fs/cgroup", parts[2], v2name)))
		}
	}
	t.Fatalf("no %s cgroup for pid %d in:\n%s", controller, pid, data)
	return ""
}

func TestResourceLimitsApplied(t *testing.T) {
	_, rt := setup(t)
	ctx := context.Background()
	spec, _ := probeSpec(t, "probe-limits")
	spec.MemoryBytes = 64 << 20
	spec.CPUs = 0.5
	if _, err := rt.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	info, err := rt.Start(ctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got := cgroupFile(t, info.Pid, "memory", "memory.limit_in_bytes", "memory.max"); got != "67108864" {
		t.Errorf("memory limit %q, want 67108864", got)
	}
	quota := cgroupFile(t, info.Pid, "cpu", "cpu.cfs_quota_us", "cpu.max")
	if quota != "50000" && quota != "50000 100000" {
		t.Errorf("cpu quota %q, want 50000 per 100000", quota)
	}
	if err := rt.Stop(ctx, spec.ID, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestAdoptionBySecondRuntime: a second Runtime (a restarted supervisor)
// finds the running task with the same pid and labels, can wait for it, and
// the task's log keeps flowing without the first.
func TestAdoptionBySecondRuntime(t *testing.T) {
	peer, rt1 := setup(t)
	ctx := context.Background()
	spec, _ := probeSpec(t, "probe-adopt")
	if _, err := rt1.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	started, err := rt1.Start(ctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	waitLog(t, rt1, spec.ID, "probe started")
	if err := rt1.Close(); err != nil {
		t.Fatal(err)
	}

	// The log driver belongs to the task's shim, not to this process (the
	// supervisor): it outlives a supervisor restart.
	drv := logDriverPid(t, spec.LogPath)
	if ppid := parentPid(t, drv); ppid == os.Getpid() {
		t.Errorf("log driver %d is a child of the supervisor", drv)
	} else if comm := readFile(fmt.Sprintf("/proc/%d/comm", ppid)); !strings.HasPrefix(comm, "containerd-shim") {
		t.Errorf("log driver's parent %d is %q, want the containerd shim", ppid, comm)
	}

	rt2 := newRuntime(t, peer)
	list, err := rt2.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Fatalf("list: %+v", list)
	}
	got := list[0]
	if got.ID != spec.ID || got.Pid != started.Pid || got.Status != fgrt.StatusRunning ||
		got.Labels["fieldgate/spec-hash"] != "abc123" || got.LogPath != spec.LogPath || got.ImageDigest == "" {
		t.Errorf("adopted %+v, want pid %d running with the spec's labels", got, started.Pid)
	}
	loaded, err := rt2.Load(ctx, spec.ID)
	if err != nil || loaded.Pid != started.Pid {
		t.Errorf("load: %+v, %v", loaded, err)
	}
	exited, err := rt2.Wait(ctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := rt2.Kill(ctx, spec.ID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if ex := <-exited; ex.Err != nil || ex.Code != 0 {
		t.Errorf("exit: %+v, want 0 after SIGTERM", ex)
	}
	waitLog(t, rt2, spec.ID, "probe stopping")
}

// TestLogRotationBounded: a chatty task's log stays within the rotation
// bounds and keeps the newest lines.
func TestLogRotationBounded(t *testing.T) {
	peer, _ := setup(t)
	rt := newRuntime(t, peer, fgrt.WithLogRotation(16<<10, 2))
	ctx := context.Background()
	spec, _ := probeSpec(t, "probe-chatty", "PROBE_LOG_LINES=2000")
	if _, err := rt.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Start(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	lines := waitLog(t, rt, spec.ID, "log lines done")
	if want := "log line 001999 .........................................."; lines[len(lines)-2] != want {
		t.Errorf("last lines: %q", lines[len(lines)-3:])
	}
	matches, _ := filepath.Glob(spec.LogPath + "*")
	sort.Strings(matches)
	if len(matches) != 3 {
		t.Errorf("log files %q, want the live one and 2 rotated", matches)
	}
	for _, m := range matches {
		if st, err := os.Stat(m); err != nil || st.Size() > 16<<10 {
			t.Errorf("%s: %v bytes, over 16 KiB (%v)", m, st.Size(), err)
		}
	}
	if err := rt.Stop(ctx, spec.ID, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestSpecValidate(t *testing.T) {
	good := fgrt.Spec{ID: "modbus-line3", Image: "fieldgate/collector-modbus:latest", LogPath: "/var/log/x.log"}
	tests := []struct {
		name string
		edit func(*fgrt.Spec)
		want string
	}{
		{"good", func(*fgrt.Spec) {}, ""},
		{"bad id", func(s *fgrt.Spec) { s.ID = "bad id" }, `container id "bad id"`},
		{"no image", func(s *fgrt.Spec) { s.Image = "" }, "image is empty"},
		{"bad image", func(s *fgrt.Spec) { s.Image = "fieldgate/Bad:1" }, `image reference "fieldgate/Bad:1"`},
		{"bad env", func(s *fgrt.Spec) { s.Env = []string{"NOEQUALS"} }, `env entry "NOEQUALS"`},
		{"relative device", func(s *fgrt.Spec) { s.Devices = []fgrt.Device{{Host: "ttyUSB0"}} }, "paths must be absolute"},
		{"relative mount", func(s *fgrt.Spec) { s.Mounts = []fgrt.Mount{{Host: "data", Container: "/data"}} }, "paths must be absolute"},
		{"negative cpus", func(s *fgrt.Spec) { s.CPUs = -1 }, "cpus -1"},
		{"negative memory", func(s *fgrt.Spec) { s.MemoryBytes = -5 }, "memory -5"},
		{"reserved label", func(s *fgrt.Spec) { s.Labels = map[string]string{fgrt.LabelLogPath: "x"} }, "reserved prefix"},
		{"no log path", func(s *fgrt.Spec) { s.LogPath = "" }, "log path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := good
			tt.edit(&s)
			err := s.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestNormalizeName(t *testing.T) {
	for in, want := range map[string]string{
		"fieldgate/collector-modbus:latest": "docker.io/fieldgate/collector-modbus:latest",
		"fieldgate/collector-modbus":        "docker.io/fieldgate/collector-modbus:latest",
		"busybox":                           "docker.io/library/busybox:latest",
		"registry.local:5000/x/y:1":         "registry.local:5000/x/y:1",
	} {
		if got, err := fgrt.NormalizeName(in); err != nil || got != want {
			t.Errorf("NormalizeName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// logDriverPid finds the log driver process writing logPath.
func logDriverPid(t *testing.T, logPath string) int {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		args := strings.Split(readFile(p), "\x00")
		if len(args) < 2 {
			continue // kernel thread, or exited meanwhile
		}
		if fgrt.IsLogDriver(args[1:len(args)-1]) && slices.Contains(args, logPath) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			return pid
		}
	}
	t.Fatalf("no log driver process for %s", logPath)
	return 0
}

func parentPid(t *testing.T, pid int) int {
	t.Helper()
	for _, line := range strings.Split(readFile(fmt.Sprintf("/proc/%d/status", pid)), "\n") {
		if v, ok := strings.CutPrefix(line, "PPid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	t.Fatalf("no PPid for pid %d", pid)
	return 0
}

// TestUnwritableLogDoesNotBlockTask: when the log file cannot be opened, the
// driver still drains the task's output, so a chatty collector (more than a
// pipe buffer of output) keeps running.
func TestUnwritableLogDoesNotBlockTask(t *testing.T) {
	_, rt := setup(t)
	ctx := context.Background()
	spec, data := probeSpec(t, "probe-nolog", "PROBE_LOG_LINES=4000")
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	spec.LogPath = filepath.Join(notDir, "probe.log") // a path below a file
	if _, err := rt.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Start(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	if got := waitFile(t, filepath.Join(data, "log-lines-done")); got != "ok" {
		t.Errorf("log-lines-done: %q", got)
	}
	if info, err := rt.Load(ctx, spec.ID); err != nil || info.Status != fgrt.StatusRunning {
		t.Errorf("after 4000 lines without a log file: %+v, %v", info, err)
	}
	if err := rt.Stop(ctx, spec.ID, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestImportDockerTarballAndForeignPlatform: a Docker-style single-image
// tarball (as `docker save` or go-containerregistry's tarball write) imports
// under its normalised name; an archive without this host's platform is an
// error naming the archive and the platform.
func TestImportDockerTarballAndForeignPlatform(t *testing.T) {
	peer := testpeer.Containerd(t)
	rt := newRuntime(t, peer)
	ctx := context.Background()
	bin := filepath.Join(filepath.Dir(probeImagesDir(t)), "bin", "probe")

	dir := t.TempDir()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		data, err := os.ReadFile(bin)
		if err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Name: "probe", Mode: 0o755, Size: int64(len(data))}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
		if err := tw.Close(); err != nil {
			return nil, err
		}
		return io.NopCloser(&buf), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", goruntime.GOARCH
	cf.Config.Entrypoint = []string{"/probe"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag("fieldgate/docker-style:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(filepath.Join(dir, "docker-style.tar"), tag, img); err != nil {
		t.Fatal(err)
	}
	res, err := rt.ImportDir(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || len(res[0].Images) != 1 || res[0].Images[0].Name != "docker.io/fieldgate/docker-style:1" {
		t.Fatalf("docker-style import: %+v", res)
	}
	if _, err := rt.Image(ctx, "fieldgate/docker-style:1"); err != nil {
		t.Error(err)
	}

	foreign := "linux/arm64"
	if goruntime.GOARCH == "arm64" {
		foreign = "linux/amd64"
	}
	fdir := t.TempDir()
	// The binary's own architecture does not matter: it is never run.
	if _, err := ociimage.Build(ociimage.Config{
		Name: "fieldgate/foreign", Tags: []string{"1"}, Binaries: map[string]string{foreign: bin},
	}, filepath.Join(fdir, "foreign.tar")); err != nil {
		t.Fatal(err)
	}
	_, err = rt.ImportDir(ctx, fdir)
	if err == nil || !strings.Contains(err.Error(), "foreign.tar") || !strings.Contains(err.Error(), "linux/"+goruntime.GOARCH) {
		t.Errorf("archive without this platform: %v", err)
	}
	t.Logf("archive without this platform: %v", err)
}
