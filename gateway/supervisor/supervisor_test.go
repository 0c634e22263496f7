package supervisor

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fieldgate/gateway/config"
)

const collectorTmpl = `  - name: %s
    image: fieldgate/collector-modbus:latest
    poll_interval: %s
    restart: %s
    devices: [%s]
    modbus:
      transport: tcp
      tcp: {address: "127.0.0.1:502"}
      devices:
        - name: plc
          unit_id: 1
          tags:
            - {name: speed, table: holding_register, address: 0, type: uint16}
`

// col is one collector of a test config; devices is a YAML flow list's
// content ("" for none).
type col struct{ name, poll, restart, devices string }

// writeConfig writes a gateway.yaml with the collectors into dir and returns its path.
func writeConfig(t *testing.T, dir string, cols ...col) string {
	t.Helper()
	return writeConfigMQTT(t, dir, "", cols...)
}

// writeConfigMQTT is writeConfig with extra mqtt: keys (", password_file: …").
func writeConfigMQTT(t *testing.T, dir, mqttExtra string, cols ...col) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "version: 1\ngateway: {id: gw1, data_dir: %q}\nmqtt: {broker: tcp://127.0.0.1:1883%s}\ncollectors:", filepath.Join(dir, "data"), mqttExtra)
	if len(cols) == 0 {
		b.WriteString(" []")
	}
	b.WriteString("\n")
	for _, c := range cols {
		fmt.Fprintf(&b, collectorTmpl, c.name, c.poll, c.restart, c.devices)
	}
	path := filepath.Join(dir, "gateway.yaml")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func load(t *testing.T, path string) *config.Config {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

type running struct {
	sup    *Supervisor
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, cfg *config.Config, rt Runtime, opts ...Option) *running {
	t.Helper()
	base := []Option{
		WithLogger(slog.New(slog.NewTextHandler(testWriter{t}, nil))),
		WithBackoff(time.Millisecond, 8*time.Millisecond, time.Hour),
		WithWatchInterval(5 * time.Millisecond),
		WithIdentityInterval(5 * time.Millisecond),
	}
	sup, err := New(cfg, rt, append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{sup: sup, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- sup.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// waitFor polls cond until it holds or 10s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func collectorStatus(s *Supervisor, name string) (CollectorStatus, bool) {
	for _, c := range s.Status().Collectors {
		if c.Name == name {
			return c, true
		}
	}
	return CollectorStatus{}, false
}

func stateIs(s *Supervisor, name, state string) func() bool {
	return func() bool {
		c, ok := collectorStatus(s, name)
		return ok && c.State == state
	}
}

func TestReconcileCreatesAndRemoves(t *testing.T) {
	dir := t.TempDir()
	cfg := load(t, writeConfig(t, dir, col{"a", "1s", "always", ""}, col{"b", "2s", "always", ""}))
	rt := newFakeRuntime()
	// A leftover managed container and a foreign one.
	rt.containers["old"] = &fakeContainer{spec: Spec{Name: "old", Labels: map[string]string{LabelManaged: "true"}}}
	rt.containers["foreign"] = &fakeContainer{spec: Spec{Name: "foreign"}}
	r := start(t, cfg, rt)
	waitFor(t, "a and b running", func() bool {
		return stateIs(r.sup, "a", StateRunning)() && stateIs(r.sup, "b", StateRunning)()
	})
	if rt.count("remove old") != 1 || rt.count("remove foreign") != 0 {
		t.Errorf("events = %v", rt.eventList())
	}
	// Files and env per the runtime contract.
	spec := specOf(r.sup, "a")
	if got, _ := os.ReadFile(spec.ConfigFile); !strings.HasPrefix(string(got), "transport: tcp") {
		t.Errorf("collector.yaml = %q", got)
	}
	if fi, err := os.Stat(spec.DataDir); err != nil || !fi.IsDir() {
		t.Errorf("data dir: %v", err)
	}
	for k, want := range map[string]string{"POLL_INTERVAL": "1s", "COLLECTOR_NAME": "a", "GATEWAY_ID": "gw1",
		"MQTT_BROKER": "tcp://127.0.0.1:1883", "COLLECTOR_CONFIG": ContainerConfigPath, "DATA_DIR": ContainerDataDir} {
		if got := spec.EnvValue(k); got != want {
			t.Errorf("env %s = %q, want %q", k, got, want)
		}
	}
}

func TestRestartPolicies(t *testing.T) {
	tests := []struct {
		policy  string
		code    int
		restart bool
	}{
		{config.RestartAlways, 0, true},
		{config.RestartAlways, 137, true},
		{config.RestartUnlessStopped, 1, true},
		{config.RestartOnFailure, 0, false},
		{config.RestartOnFailure, 2, true},
		{config.RestartNever, 1, false},
		{config.RestartNever, 0, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%d", tt.policy, tt.code), func(t *testing.T) {
			if got := ShouldRestart(tt.policy, tt.code); got != tt.restart {
				t.Fatalf("ShouldRestart = %v", got)
			}
			dir := t.TempDir()
			rt := newFakeRuntime()
			r := start(t, load(t, writeConfig(t, dir, col{"a", "1s", tt.policy, ""})), rt)
			waitFor(t, "running", stateIs(r.sup, "a", StateRunning))
			first := rt.pid("a")
			if err := rt.kill("a", tt.code); err != nil {
				t.Fatal(err)
			}
			if tt.restart {
				waitFor(t, "restarted", func() bool {
					c, _ := collectorStatus(r.sup, "a")
					return c.State == StateRunning && c.Restarts == 1 && c.Pid != first
				})
			} else {
				waitFor(t, "exited", stateIs(r.sup, "a", StateExited))
				if rt.count("start a") != 1 {
					t.Errorf("events = %v", rt.eventList())
				}
			}
			c, _ := collectorStatus(r.sup, "a")
			if c.LastExit == nil || c.LastExit.Code != tt.code {
				t.Errorf("last_exit = %+v", c.LastExit)
			}
		})
	}
}

func TestBackoffDelay(t *testing.T) {
	tests := []struct {
		n    int
		want time.Duration
	}{
		{0, time.Second}, {1, 2 * time.Second}, {2, 4 * time.Second}, {5, 32 * time.Second},
		{6, time.Minute}, {7, time.Minute}, {100, time.Minute},
	}
	for _, tt := range tests {
		if got := BackoffDelay(tt.n, time.Second, time.Minute); got != tt.want {
			t.Errorf("BackoffDelay(%d) = %v, want %v", tt.n, got, tt.want)
		}
	}
}

// TestCrashLoop: fast exits in a row show StateCrashLoop and grow the
// back-off; the state is visible until the task runs again.
func TestCrashLoop(t *testing.T) {
	dir := t.TempDir()
	rt := newFakeRuntime()
	// Back-offs of 50, 100 and 200 ms: the crash-loop state lasts long enough
	// to be seen by a poll every 2 ms even on a loaded machine under -race
	// (a 4 ms back-off was missed there).
	r := start(t, load(t, writeConfig(t, dir, col{"a", "1s", "always", ""})), rt,
		WithBackoff(50*time.Millisecond, 5*time.Second, time.Hour), WithCrashLoop(3, time.Hour))
	for i := 1; i <= 3; i++ {
		waitFor(t, "running", stateIs(r.sup, "a", StateRunning))
		if err := rt.kill("a", 1); err != nil {
			t.Fatal(err)
		}
		if i < 3 {
			waitFor(t, fmt.Sprintf("restart %d", i), func() bool {
				c, _ := collectorStatus(r.sup, "a")
				return c.Restarts == i
			})
		}
	}
	waitFor(t, "crashloop", stateIs(r.sup, "a", StateCrashLoop))
	c, _ := collectorStatus(r.sup, "a")
	if c.RestartAt == nil {
		t.Error("restart_at not set in crash loop")
	}
	waitFor(t, "running again", stateIs(r.sup, "a", StateRunning))
}

func TestStartErrorRetried(t *testing.T) {
	dir := t.TempDir()
	rt := newFakeRuntime()
	rt.startErr["a"] = errNoImage
	r := start(t, load(t, writeConfig(t, dir, col{"a", "1s", "always", ""}, col{"b", "1s", "always", ""})), rt)
	waitFor(t, "a in error, b running", func() bool {
		c, _ := collectorStatus(r.sup, "a")
		return c.State == StateError && strings.Contains(c.LastError, "not found") && stateIs(r.sup, "b", StateRunning)()
	})
	rt.mu.Lock()
	delete(rt.startErr, "a")
	rt.mu.Unlock()
	waitFor(t, "a running", stateIs(r.sup, "a", StateRunning))
	if c, _ := collectorStatus(r.sup, "a"); c.LastError != "" {
		t.Errorf("last_error kept: %q", c.LastError)
	}
}

// TestAdoption: a supervisor stopped and started again adopts the running
// tasks (same pids, no new start) and leaves them running when it stops.
func TestAdoption(t *testing.T) {
	dir := t.TempDir()
	path := writeConfig(t, dir, col{"a", "1s", "always", ""}, col{"b", "2s", "on-failure", ""})
	rt := newFakeRuntime()
	r1 := start(t, load(t, path), rt)
	waitFor(t, "running", func() bool { return stateIs(r1.sup, "a", StateRunning)() && stateIs(r1.sup, "b", StateRunning)() })
	pa, pb := rt.pid("a"), rt.pid("b")
	r1.stop(t)
	if rt.pid("a") != pa || rt.pid("b") != pb {
		t.Fatalf("stopping the supervisor stopped collectors: %v", rt.eventList())
	}
	r2 := start(t, load(t, path), rt)
	waitFor(t, "adopted", func() bool {
		a, _ := collectorStatus(r2.sup, "a")
		b, _ := collectorStatus(r2.sup, "b")
		return a.State == StateRunning && a.Adopted && b.State == StateRunning && b.Adopted
	})
	if a, _ := collectorStatus(r2.sup, "a"); a.Pid != pa {
		t.Errorf("pid a = %d, want %d", a.Pid, pa)
	}
	if rt.count("start a") != 1 || rt.count("start b") != 1 {
		t.Errorf("events = %v", rt.eventList())
	}
	// Adopted tasks are supervised: an exit is restarted.
	if err := rt.kill("a", 137); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "restart", func() bool { a, _ := collectorStatus(r2.sup, "a"); return a.Restarts == 1 && a.State == StateRunning })
}

func TestStopCollectors(t *testing.T) {
	dir := t.TempDir()
	rt := newFakeRuntime()
	r := start(t, load(t, writeConfig(t, dir, col{"a", "1s", "always", ""})), rt, WithStopCollectors(true))
	waitFor(t, "running", stateIs(r.sup, "a", StateRunning))
	r.stop(t)
	if rt.count("remove a") != 1 || rt.pid("a") != 0 {
		t.Errorf("events = %v", rt.eventList())
	}
}

// TestHotReload: a file change recreates only the changed collector, adds
// and removes collectors; an invalid file is rejected and changes nothing.
func TestHotReload(t *testing.T) {
	dir := t.TempDir()
	path := writeConfig(t, dir, col{"a", "1s", "always", ""}, col{"b", "2s", "always", ""})
	rt := newFakeRuntime()
	r := start(t, load(t, path), rt)
	waitFor(t, "running", func() bool { return stateIs(r.sup, "a", StateRunning)() && stateIs(r.sup, "b", StateRunning)() })
	pa, pb := rt.pid("a"), rt.pid("b")
	ha := specOf(r.sup, "a").Labels[LabelSpecHash]

	// Poll interval of a changed; b's restart policy changed (not part of the spec).
	writeConfig(t, dir, col{"a", "3s", "always", ""}, col{"b", "2s", "on-failure", ""})
	waitFor(t, "reloaded", func() bool { return r.sup.Status().ReloadsOK == 1 })
	waitFor(t, "a recreated", func() bool {
		c, _ := collectorStatus(r.sup, "a")
		return c.State == StateRunning && c.SpecHash != ha && c.Pid != pa
	})
	if rt.pid("b") != pb || rt.count("start b") != 1 {
		t.Errorf("b was touched: %v", rt.eventList())
	}
	if b, _ := collectorStatus(r.sup, "b"); b.Restart != config.RestartOnFailure {
		t.Errorf("b restart policy = %q", b.Restart)
	}
	if got := specOf(r.sup, "a").EnvValue("POLL_INTERVAL"); got != "3s" {
		t.Errorf("POLL_INTERVAL = %q", got)
	}
	if st := r.sup.Status(); st.ReloadsOK != 1 || st.LastReloadError != "" {
		t.Errorf("status = %+v", st)
	}

	// Invalid file: rejected with the reason, nothing touched.
	events := len(rt.eventList())
	bad := strings.Replace(mustRead(t, path), "restart: always", "restart: sometimes", 1)
	if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "reload rejected", func() bool { return r.sup.Status().ReloadsFailed >= 1 })
	st := r.sup.Status()
	if !strings.Contains(st.LastReloadError, "gateway.yaml:") || !strings.Contains(st.LastReloadError, `unknown restart policy "sometimes"`) {
		t.Errorf("last_reload_error = %q", st.LastReloadError)
	}
	// SIGHUP on the same bad file: rejected again, still nothing touched.
	failed := st.ReloadsFailed
	r.sup.Reload()
	waitFor(t, "reload rejected again", func() bool { return r.sup.Status().ReloadsFailed == failed+1 })
	if got := rt.eventList(); len(got) != events {
		t.Errorf("invalid config changed something: %v", got[events:])
	}

	// b removed, c added.
	writeConfig(t, dir, col{"a", "3s", "always", ""}, col{"c", "1s", "always", ""})
	waitFor(t, "reloaded", func() bool { return r.sup.Status().ReloadsOK == 2 })
	waitFor(t, "c running, b gone", func() bool {
		_, hasB := collectorStatus(r.sup, "b")
		return stateIs(r.sup, "c", StateRunning)() && !hasB
	})
	if rt.count("remove b") != 1 || rt.pid("b") != 0 {
		t.Errorf("events = %v", rt.eventList())
	}
	if st := r.sup.Status(); st.LastReloadError != "" || st.ReloadsOK != 2 {
		t.Errorf("status = %+v", st)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSpecHash(t *testing.T) {
	dir := t.TempDir()
	path := writeConfig(t, dir, col{"a", "1s", "always", ""})
	s1 := BuildSpec(load(t, path), &load(t, path).Collectors[0])
	s2 := BuildSpec(load(t, path), &load(t, path).Collectors[0])
	if s1.Hash() != s2.Hash() {
		t.Error("equal configs hash differently")
	}
	writeConfig(t, dir, col{"a", "1s", "never", ""})
	if s3 := BuildSpec(load(t, path), &load(t, path).Collectors[0]); s3.Hash() != s1.Hash() {
		t.Error("restart policy changed the spec hash")
	}
	writeConfig(t, dir, col{"a", "2s", "always", ""})
	if s4 := BuildSpec(load(t, path), &load(t, path).Collectors[0]); s4.Hash() == s1.Hash() {
		t.Error("poll interval did not change the spec hash")
	}
}

func specOf(s *Supervisor, name string) Spec {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.workers[name].spec
}

func TestRestartOnly(t *testing.T) {
	dir := t.TempDir()
	a := load(t, writeConfig(t, dir, col{"a", "1s", "always", ""}))
	// Same settings, different lines: nothing to warn about.
	data := "# moved down\n\n" + mustRead(t, filepath.Join(dir, "gateway.yaml"))
	if err := os.WriteFile(filepath.Join(dir, "gateway.yaml"), []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	b := load(t, filepath.Join(dir, "gateway.yaml"))
	if got := restartOnly(a, b); len(got) != 0 {
		t.Errorf("restartOnly = %v", got)
	}
	b.MQTT.Broker = "tcp://other:1883"
	b.Gateway.Listen = "127.0.0.1:1"
	if got := restartOnly(a, b); len(got) != 2 {
		t.Errorf("restartOnly = %v", got)
	}
}

func TestStatusCarriesCollectorReport(t *testing.T) {
	dir := t.TempDir()
	cfg := load(t, writeConfig(t, dir, col{"a", "1s", "always", ""}))
	r := start(t, cfg, newFakeRuntime())
	waitFor(t, "a running", stateIs(r.sup, "a", StateRunning))
	report := `{"state":"online","mqtt":{"connected":false,"last_error":"not Authorized"}}`
	if err := os.WriteFile(filepath.Join(specOf(r.sup, "a").DataDir, collectorStatusFile), []byte(report+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	st := r.sup.Status()
	if len(st.Collectors) != 1 || string(st.Collectors[0].Report) != report {
		t.Fatalf("status = %+v", st.Collectors)
	}
	// A torn or foreign file is left out rather than breaking /status.
	_ = os.WriteFile(filepath.Join(specOf(r.sup, "a").DataDir, collectorStatusFile), []byte(`{"state":`), 0o644)
	if rep := r.sup.Status().Collectors[0].Report; rep != nil {
		t.Errorf("invalid report passed through: %s", rep)
	}
}

func TestSpecQueueEnv(t *testing.T) {
	yml := `version: 1
gateway: {id: gw1, data_dir: /var/lib/fieldgate}
mqtt: {broker: tcp://127.0.0.1:1883}
collectors:
  - name: a
    image: fieldgate/collector-modbus:latest
    queue: {max_bytes: 64MiB, max_age: 24h, sync: always, policy: reject_new}
    env: {QUEUE_POLICY: drop_oldest}
    modbus: {transport: tcp, tcp: {address: "127.0.0.1:502"}, devices: [{name: d, tags: [{name: t, table: coil, address: 0}]}]}
`
	cfg, err := config.Parse("gw.yaml", []byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	spec := BuildSpec(cfg, &cfg.Collectors[0])
	for k, want := range map[string]string{"QUEUE_MAX_BYTES": "67108864", "QUEUE_MAX_AGE": "24h0m0s", "QUEUE_SYNC": "always",
		"QUEUE_POLICY": "drop_oldest"} { // env: overrides queue:
		if got := spec.EnvValue(k); got != want {
			t.Errorf("env %s = %q, want %q", k, got, want)
		}
	}
}
