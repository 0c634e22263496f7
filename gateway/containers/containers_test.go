package containers_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"fieldgate/gateway/config"
	"fieldgate/gateway/containers"
	"fieldgate/gateway/supervisor"
	"fieldgate/internal/fieldgatetest"
	"fieldgate/internal/testpeer"
	fgruntime "fieldgate/runtime"
)

// TestMain lets this test binary serve as the tasks' log driver (the
// runtime's default is its own executable) and removes what it built.
func TestMain(m *testing.M) {
	if fgruntime.IsLogDriver(os.Args[1:]) {
		if err := fgruntime.RunLogDriver(os.Args[1:]); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := m.Run()
	fieldgatetest.Cleanup()
	os.Exit(code)
}

type tlog struct{ t testing.TB }

func (w tlog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// setup is a private containerd with images_dir holding the sleeper as
// fieldgate/collector-modbus:1.0 and :latest, and a config with one
// collector "a" on :latest.
type setup struct {
	t      *testing.T
	peer   *testpeer.ContainerdPeer
	dir    string
	cfg    *config.Config
	digest string // of :latest as imported at first
}

func newSetup(t *testing.T) *setup {
	peer := testpeer.Containerd(t)
	dir := t.TempDir()
	s := &setup{t: t, peer: peer, dir: dir}
	s.digest = fieldgatetest.ImageArchive(t, filepath.Join(dir, "images", "collector-modbus.tar"), "fieldgate/collector-modbus", fieldgatetest.Sleeper(t), "1.0", "latest")
	yml := fmt.Sprintf(`version: 1
gateway: {id: gw, data_dir: %q}
runtime: {address: %q, namespace: %q, snapshotter: %q}
mqtt: {broker: tcp://127.0.0.1:1}
collectors:
  - name: a
    image: fieldgate/collector-modbus:latest
    modbus: {transport: tcp, tcp: {address: "127.0.0.1:1502"}, devices: [{name: d, tags: [{name: t, table: coil, address: 0}]}]}
`, dir, peer.Address, peer.Namespace, peer.Snapshotter)
	cfg, err := config.Parse(filepath.Join(dir, "gateway.yaml"), []byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	s.cfg = cfg
	return s
}

// open is what `fieldgate run` does first: connect and import images_dir.
func (s *setup) open() *containers.Runtime {
	s.t.Helper()
	rt, err := containers.Open(context.Background(), s.cfg, slog.New(slog.NewTextHandler(tlog{s.t}, nil)),
		containers.WithStopTimeout(5*time.Second))
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { rt.Close() })
	return rt
}

// spec is collector a's spec with its identity resolved now, its files
// written (the supervisor's part).
func (s *setup) spec(rt *containers.Runtime) supervisor.Spec {
	s.t.Helper()
	spec := supervisor.BuildSpec(s.cfg, &s.cfg.Collectors[0])
	id, err := supervisor.ResolveIdentity(context.Background(), rt, &spec)
	if err != nil {
		s.t.Fatal(err)
	}
	spec = spec.WithIdentity(id)
	for _, dir := range []string{spec.DataDir, filepath.Dir(spec.ConfigFile)} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			s.t.Fatal(err)
		}
	}
	if err := os.WriteFile(spec.ConfigFile, spec.Config, 0o644); err != nil {
		s.t.Fatal(err)
	}
	return spec
}

func container(t *testing.T, rt *containers.Runtime, name string) (supervisor.Container, bool) {
	t.Helper()
	list, err := rt.Containers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range list {
		if c.Name == name {
			return c, true
		}
	}
	return supervisor.Container{}, false
}

func alive(pid uint32) bool { return pid != 0 && fieldgatetest.TaskRunning(pid) }

// TestContainerPolicy drives the supervisor's Runtime against containerd:
// create and start, adopt, an exit's status, a reboot (containers without
// tasks), an image tag moved by a new archive (replace, old task first), a
// container whose image moved under it, and pruning.
func TestContainerPolicy(t *testing.T) {
	s := newSetup(t)
	rt := s.open()
	ctx := context.Background()
	spec := s.spec(rt)
	if spec.Identity.ImageDigest != s.digest {
		t.Fatalf("identity digest %s, want %s", spec.Identity.ImageDigest, s.digest)
	}

	task, err := rt.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	first := task.Info()
	if first.Adopted || !alive(first.Pid) || first.ImageDigest != s.digest {
		t.Fatalf("started: %+v", first)
	}
	if c, ok := container(t, rt, "a"); !ok || !c.Running || c.Labels[supervisor.LabelSpecHash] != spec.Labels[supervisor.LabelSpecHash] {
		t.Fatalf("listed: %+v", c)
	}

	t.Run("adopt", func(t *testing.T) {
		task, err := rt.Start(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		info := task.Info()
		if !info.Adopted || info.Pid != first.Pid || time.Since(info.StartedAt) > time.Minute || info.StartedAt.After(time.Now()) {
			t.Errorf("adopted: %+v (first %+v)", info, first)
		}
	})

	t.Run("exit status listed", func(t *testing.T) {
		if err := syscall.Kill(int(first.Pid), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		exit, err := task.Wait(ctx)
		if err != nil || exit.Code != 137 {
			t.Fatalf("wait: %+v %v", exit, err)
		}
		c, _ := container(t, rt, "a")
		if c.Running || !c.Exited || c.ExitCode != 137 {
			t.Errorf("listed after the kill: %+v", c)
		}
		task, err = rt.Start(ctx, spec)
		if err != nil || task.Info().Adopted || !alive(task.Info().Pid) {
			t.Fatalf("restart: %+v %v", task, err)
		}
	})

	t.Run("reboot", func(t *testing.T) {
		old := task.Info().Pid
		rt.Close()
		s.peer.Reboot(t, s.t)
		if alive(old) {
			t.Fatalf("task %d survived the reboot", old)
		}
		rt = s.open()
		c, ok := container(t, rt, "a")
		if !ok || c.Running || c.Exited {
			t.Fatalf("after the reboot the container is listed %+v (found %v), want it without a task", c, ok)
		}
		task, err = rt.Start(ctx, s.spec(rt))
		if err != nil {
			t.Fatal(err)
		}
		if info := task.Info(); info.Adopted || !alive(info.Pid) || info.ImageDigest != s.digest {
			t.Errorf("after the reboot: %+v", info)
		}
	})

	var newer string
	t.Run("tag moved by a new archive", func(t *testing.T) {
		old := task.Info().Pid
		// A new bundle writes its archive over the old one and fieldgate
		// restarts (Open imports images_dir).
		newer = fieldgatetest.ImageArchive(t, filepath.Join(s.dir, "images", "collector-modbus.tar"), "fieldgate/collector-modbus", fieldgatetest.Sleeper(t), "2.0", "latest")
		rt.Close()
		rt = s.open()
		next := s.spec(rt)
		if next.Identity.ImageDigest != newer || next.Labels[supervisor.LabelSpecHash] == spec.Labels[supervisor.LabelSpecHash] {
			t.Fatalf("identity after the import: %+v", next.Identity)
		}
		task, err = rt.Start(ctx, next)
		if err != nil {
			t.Fatal(err)
		}
		if info := task.Info(); info.Adopted || info.ImageDigest != newer || alive(old) {
			t.Errorf("replaced: %+v, old task %d alive %v", info, old, alive(old))
		}
		spec = next
	})

	t.Run("image moved under a new container", func(t *testing.T) {
		// The identity names the old digest; the tag points to the new one.
		stale := spec.WithIdentity(supervisor.Identity{ImageDigest: s.digest})
		_, err := rt.Start(ctx, stale)
		if err == nil || !strings.Contains(err.Error(), "moved to "+newer) {
			t.Fatalf("start on a stale identity: %v", err)
		}
		if c, ok := container(t, rt, "a"); ok {
			t.Errorf("container of the wrong digest kept: %+v", c)
		}
		if task, err = rt.Start(ctx, spec); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("prune keeps what is in use", func(t *testing.T) {
		imgs := func() map[string]string {
			list, err := rt.Runtime().Images(ctx)
			if err != nil {
				t.Fatal(err)
			}
			out := map[string]string{}
			for _, i := range list {
				out[i.Name] = i.Digest
			}
			return out
		}
		before := imgs()
		if before["docker.io/fieldgate/collector-modbus:1.0"] != s.digest || before["docker.io/fieldgate/collector-modbus:latest"] != newer {
			t.Fatalf("images before: %v", before)
		}
		if err := rt.Prune(ctx, []string{newer}); err != nil {
			t.Fatal(err)
		}
		after := imgs()
		if _, ok := after["docker.io/fieldgate/collector-modbus:1.0"]; ok || after["docker.io/fieldgate/collector-modbus:2.0"] != newer || after["docker.io/fieldgate/collector-modbus:latest"] != newer {
			t.Errorf("images after the prune: %v", after)
		}
		// What images_dir ships and what a container runs stay, in use or not.
		if err := rt.Prune(ctx, nil); err != nil {
			t.Fatal(err)
		}
		if got := imgs(); len(got) != 2 {
			t.Errorf("images after pruning with nothing in use: %v", got)
		}
		if info := task.Info(); !alive(info.Pid) {
			t.Error("collector died with the prune")
		}
	})

	if err := rt.Remove(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := rt.Remove(ctx, "a"); err != nil {
		t.Errorf("removing a missing container: %v", err)
	}
}
