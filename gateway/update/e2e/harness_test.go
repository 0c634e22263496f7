// Package e2e tests firmware updates end to end (issue 10): real fieldgate
// binaries of two or three versions, real collector images, bundles signed
// and installed through install.sh and `fieldgate update`, a private
// containerd, mosquitto and a pymodbus device, and the systemd unit's
// command lines run in a loop as systemd would.
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"aead.dev/minisign"

	"fieldgate/gateway/supervisor"
	"fieldgate/gateway/update"
	"fieldgate/internal/fieldgatetest"
	"fieldgate/internal/testpeer"
)

// Trial settings of the tests: short, yet generous for a loaded machine.
const (
	healthyFor    = "3s"
	confirmWithin = "90s"
	pollInterval  = "250ms"
	gatewayID     = fieldgatetest.GatewayID // what the shared recorder listens to
)

// collectors are the collectors of every test gateway.
var collectors = []string{"a", "b"}

// binaries are the programs the tests build (once per test binary).
type binaries struct {
	// fieldgate and collector hold the builds of each version.
	fieldgate, collector map[string]string
	// exit1 exits 1 at once.
	exit1 string
}

func TestMain(m *testing.M) {
	code := m.Run()
	fieldgatetest.Cleanup()
	if archives.dir != "" {
		os.RemoveAll(archives.dir)
	}
	os.Exit(code)
}

// bins builds fieldgate and the Modbus collector at versions 1, 2 and 3
// (the version is linked in, so each build and image digest differs) and
// the exit1 program.
func bins(t *testing.T) *binaries {
	t.Helper()
	b := &binaries{fieldgate: map[string]string{}, collector: map[string]string{}}
	for _, v := range []string{"1", "2", "3"} {
		b.fieldgate[v] = fieldgatetest.FieldgateVersion(t, v)
		b.collector[v] = fieldgatetest.Collector(t, "modbus-collector", v)
	}
	b.exit1 = testpeer.GoBuild(t, "fieldgate/gateway/update/e2e/testdata/exit1")
	return b
}

// gateway is one gateway installed into a root directory: its config,
// keys and data dir under root, its peers, and the unit running.
type gateway struct {
	t       *testing.T
	root    string
	config  string
	dataDir string
	addr    string
	ctrd    *testpeer.ContainerdPeer
	broker  *testpeer.Broker
	device  string
	key     minisign.PrivateKey
	bins    *binaries
	unit    *unit
	seqs    *fieldgatetest.Recorder
	gwState <-chan testpeer.Message
}

func newGateway(t *testing.T) *gateway {
	t.Helper()
	testpeer.Require(t, "containerd", "mosquitto", "pymodbus", "minisign")
	g := &gateway{t: t, bins: bins(t), ctrd: testpeer.Containerd(t), broker: testpeer.StartBroker(t)}
	dev := testpeer.PyModbus(t, testpeer.PyModbusConfig{Mode: "tcp", Units: map[int]testpeer.PyModbusUnit{
		1: {Holding: map[uint16]uint16{0: 1500}},
	}})
	g.device = dev.Addr
	root, err := os.MkdirTemp("", "fg-update-root-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	g.root = root
	g.config = filepath.Join(root, "etc/fieldgate/gateway.yaml")
	g.dataDir = filepath.Join(root, "var/lib/fieldgate")
	g.addr = fmt.Sprintf("127.0.0.1:%d", testpeer.FreePort(t))
	keys := filepath.Join(root, "etc/fieldgate/keys")
	if err := os.MkdirAll(keys, 0o755); err != nil {
		t.Fatal(err)
	}
	keyDir := t.TempDir()
	if _, err := update.GenerateKey(filepath.Join(keyDir, "release.key"), filepath.Join(keys, "release.pub"), ""); err != nil {
		t.Fatal(err)
	}
	if g.key, err = update.LoadPrivateKey(filepath.Join(keyDir, "release.key"), ""); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `version: 1
gateway: {id: %s, data_dir: %q, listen: %q}
runtime: {address: %q, namespace: %q, snapshotter: %q}
mqtt: {broker: %q}
update: {confirm_within: %s, healthy_for: %s, keys_dir: %q}
collectors:
`, gatewayID, g.dataDir, g.addr, g.ctrd.Address, g.ctrd.Namespace, g.ctrd.Snapshotter, g.broker.Addr, confirmWithin, healthyFor, keys)
	for _, c := range collectors {
		fmt.Fprintf(&b, `  - name: %s
    image: fieldgate/collector-modbus:latest
    poll_interval: %s
    modbus:
      transport: tcp
      tcp: {address: %q}
      devices:
        - {name: plc, unit_id: 1, tags: [{name: speed, table: holding_register, address: 0, type: uint16}]}
`, c, pollInterval, g.device)
	}
	if err := os.MkdirAll(filepath.Dir(g.config), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(g.config, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	g.seqs = fieldgatetest.NewRecorder(t, g.broker.Addr, "", "")
	g.gwState = testpeer.Subscribe(t, g.broker.Addr, "fieldgate/"+gatewayID+"/status")
	return g
}

// bundleSpec is what goes into a test bundle.
type bundleSpec struct {
	version string
	// fieldgate and collector are binaries; default the builds of version.
	fieldgate, collector string
	// tamper changes the staged bundle after it is signed.
	tamper func(dir string)
	// key signs instead of the gateway's release key.
	key *minisign.PrivateKey
}

// bundle stages a signed bundle directory as build-bundle.sh lays it out,
// with the repository's install.sh, unit and example config.
func (g *gateway) bundle(spec bundleSpec) string {
	t := g.t
	t.Helper()
	if spec.fieldgate == "" {
		spec.fieldgate = g.bins.fieldgate[spec.version]
	}
	if spec.collector == "" {
		spec.collector = g.bins.collector[spec.version]
	}
	dir := filepath.Join(t.TempDir(), "fieldgate-firmware-"+spec.version)
	repo := repoRoot(t)
	for src, dst := range map[string]string{
		spec.fieldgate: "fieldgate",
		filepath.Join(repo, "firmware/bundle/install.sh"):        "install.sh",
		filepath.Join(repo, "firmware/bundle/fieldgate.service"): "fieldgate.service",
		filepath.Join(repo, "firmware/bundle/gateway.yaml"):      "gateway.yaml",
	} {
		copyFile(t, src, filepath.Join(dir, dst))
	}
	copyFile(t, imageArchive(t, spec.collector, spec.version), filepath.Join(dir, "images", "collector-modbus.tar"))
	if _, err := update.WriteManifest(dir, update.ManifestInfo{Version: spec.version, Architecture: update.HostArchitecture()}); err != nil {
		t.Fatal(err)
	}
	key := g.key
	if spec.key != nil {
		key = *spec.key
	}
	if err := update.SignFile(filepath.Join(dir, update.ManifestFile), key, time.Now()); err != nil {
		t.Fatal(err)
	}
	if spec.tamper != nil {
		spec.tamper(dir)
	}
	return dir
}

// archives caches the collector image archives: packing one (gzip, in
// this process) is the costliest part of a bundle, most of all under -race.
var archives struct {
	sync.Mutex
	dir  string
	path map[string]string
}

// imageArchive is the archive of fieldgate/collector-modbus with tags
// version and latest holding binary, built once per test binary.
func imageArchive(t *testing.T, binary, version string) string {
	t.Helper()
	archives.Lock()
	defer archives.Unlock()
	key := binary + " " + version
	if p, ok := archives.path[key]; ok {
		return p
	}
	if archives.dir == "" {
		d, err := os.MkdirTemp("", "fg-update-images-")
		if err != nil {
			t.Fatal(err)
		}
		archives.dir, archives.path = d, map[string]string{}
	}
	p := filepath.Join(archives.dir, fmt.Sprint(len(archives.path)), "collector-modbus.tar")
	fieldgatetest.ImageArchive(t, p, "fieldgate/collector-modbus", binary, version, "latest")
	archives.path[key] = p
	return p
}

// installFirst runs the bundle's install.sh into the root, as on a fresh
// box (ROOT: no systemctl), and starts the unit.
func (g *gateway) installFirst(bundle string) {
	t := g.t
	t.Helper()
	cmd := exec.Command("/bin/sh", filepath.Join(bundle, "install.sh"))
	cmd.Env = append(os.Environ(), "ROOT="+g.root)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("install.sh: %v\n%s", err, out)
	}
	t.Logf("install.sh:\n%s", out)
	if target, err := os.Readlink(filepath.Join(g.root, "usr/local/bin/fieldgate")); err != nil || target != "/var/lib/fieldgate/slots/current/fieldgate" {
		t.Errorf("/usr/local/bin/fieldgate -> %q (%v)", target, err)
	}
	g.unit = startUnit(t, g.root)
}

// installFirstVersion installs the bundle of version as a fresh box's
// first installation, waits until it runs committed with its collectors on
// its pinned digest and publishing, and returns the bundle.
func (g *gateway) installFirstVersion(version string) string {
	g.t.Helper()
	b := g.bundle(bundleSpec{version: version})
	g.installFirst(b)
	g.waitVersion(version, g.pins(b)[latest], supervisor.UpdateCommitted, 120*time.Second)
	g.waitData("data from version " + version)
	return b
}

// fieldgate runs the installed (current slot's) fieldgate with args.
func (g *gateway) fieldgate(env []string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(g.dataDir, "slots/current/fieldgate"), args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// update installs a bundle with the running version's `fieldgate update`.
func (g *gateway) update(bundle string, env ...string) (string, error) {
	return g.fieldgate(env, "update", "--config", g.config, bundle)
}

func (g *gateway) status() (supervisor.Status, error) {
	st, _, err := fieldgatetest.FetchStatus(context.Background(), g.addr)
	return st, err
}

func (g *gateway) get(path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+g.addr+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// pins is what the bundle of version pins: image name → digest.
func (g *gateway) pins(bundle string) map[string]string {
	g.t.Helper()
	data, err := os.ReadFile(filepath.Join(bundle, update.ManifestFile))
	if err != nil {
		g.t.Fatal(err)
	}
	m, err := update.ParseManifest(data)
	if err != nil {
		g.t.Fatal(err)
	}
	return m.Pins()
}

// waitVersion waits until the supervisor of version serves /status with
// every collector running the image digest pinned for fieldgate/collector-modbus:latest
// and the update state wanted, and returns that status.
func (g *gateway) waitVersion(version, digest, state string, timeout time.Duration) supervisor.Status {
	g.t.Helper()
	var st supervisor.Status
	var last string
	reached := false
	defer func() {
		if !reached { // WaitFor timed out: say what the supervisor showed
			g.t.Logf("last /status: %s\nunit log:\n%s", last, g.unit.logTail())
		}
	}()
	testpeer.WaitFor(g.t, timeout, fmt.Sprintf("version %s %s on digest %s", version, state, digest), func() bool {
		var err error
		st, err = g.status()
		if err != nil {
			last = err.Error()
			return false
		}
		ok := st.Version == version && st.Update != nil && st.Update.State == state &&
			st.Update.Current != nil && st.Update.Current.Version == version && len(st.Collectors) == len(collectors)
		for _, c := range st.Collectors {
			ok = ok && c.State == supervisor.StateRunning && c.ImageDigest == digest
		}
		if !ok {
			b, _ := json.Marshal(st)
			last = string(b)
		}
		return ok
	})
	reached = true
	return st
}

// pids is the supervisor's and the collectors' pids.
func (g *gateway) pids() (supervisor int, tasks map[string]uint32) {
	g.t.Helper()
	st, err := g.status()
	if err != nil {
		g.t.Fatal(err)
	}
	tasks = map[string]uint32{}
	for _, c := range st.Collectors {
		tasks[c.Name] = c.Pid
	}
	return g.unit.pid(), tasks
}

func repoRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, st.Mode().Perm()); err != nil {
		t.Fatal(err)
	}
}

// unit plays systemd for fieldgate.service: it runs the unit's ExecStartPre
// and ExecStart command lines (paths moved into the root), and starts them
// again RestartSec after the supervisor exits, unless it exits with a status
// of RestartPreventExitStatus.
type unit struct {
	t          *testing.T
	pre, start []string
	restartSec time.Duration
	prevent    map[int]bool
	log        *testpeer.SyncBuffer

	mu     sync.Mutex
	cmd    *exec.Cmd
	starts []unitStart
	stop   chan struct{}
	done   chan struct{}
}

// unitStart is one start of the supervisor.
type unitStart struct {
	binary string // the slot binary the current link resolved to
	pid    int
	exit   int
}

func startUnit(t *testing.T, root string) *unit {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "lib/systemd/system/fieldgate.service"))
	if err != nil {
		t.Fatal(err)
	}
	u := &unit{t: t, restartSec: time.Second, prevent: map[int]bool{}, log: &testpeer.SyncBuffer{},
		stop: make(chan struct{}), done: make(chan struct{})}
	move := strings.NewReplacer("/var/lib/fieldgate", filepath.Join(root, "var/lib/fieldgate"),
		"/etc/fieldgate", filepath.Join(root, "etc/fieldgate"))
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		key, val, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok {
			continue
		}
		switch key {
		case "ExecStartPre":
			u.pre = strings.Fields(move.Replace(val))
		case "ExecStart":
			u.start = strings.Fields(move.Replace(val))
		case "RestartSec":
			d, err := time.ParseDuration(val + "s")
			if err != nil {
				t.Fatalf("RestartSec=%s: %v", val, err)
			}
			u.restartSec = d
		case "RestartPreventExitStatus":
			for _, f := range strings.Fields(val) {
				n, _ := strconv.Atoi(f)
				u.prevent[n] = true
			}
		}
	}
	if len(u.pre) == 0 || len(u.start) == 0 {
		t.Fatalf("fieldgate.service lacks ExecStartPre or ExecStart:\n%s", data)
	}
	go u.loop()
	t.Cleanup(func() {
		u.kill(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("unit log:\n%s", u.logTail())
		}
	})
	return u
}

func (u *unit) loop() {
	defer close(u.done)
	for n := 1; ; n++ {
		fmt.Fprintf(u.log, "--- start %d: %s\n", n, strings.Join(u.pre, " "))
		pre := exec.Command(u.pre[0], u.pre[1:]...)
		pre.Stdout, pre.Stderr = u.log, u.log
		if err := pre.Run(); err != nil {
			fmt.Fprintf(u.log, "--- ExecStartPre failed: %v\n", err)
		} else {
			binary, _ := filepath.EvalSymlinks(u.start[0])
			cmd := exec.Command(u.start[0], u.start[1:]...)
			cmd.Stdout, cmd.Stderr = u.log, u.log
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			u.mu.Lock()
			select {
			case <-u.stop:
				u.mu.Unlock()
				return
			default:
			}
			err := cmd.Start()
			if err == nil {
				u.cmd = cmd
			}
			u.mu.Unlock()
			if err != nil {
				fmt.Fprintf(u.log, "--- ExecStart failed: %v\n", err)
			} else {
				fmt.Fprintf(u.log, "--- started %s (pid %d)\n", binary, cmd.Process.Pid)
				_ = cmd.Wait()
				code := cmd.ProcessState.ExitCode()
				u.mu.Lock()
				u.cmd = nil
				u.starts = append(u.starts, unitStart{binary: binary, pid: cmd.Process.Pid, exit: code})
				u.mu.Unlock()
				fmt.Fprintf(u.log, "--- exited: %s\n", cmd.ProcessState)
				if u.prevent[code] {
					fmt.Fprintf(u.log, "--- exit status %d: not restarted (RestartPreventExitStatus)\n", code)
					<-u.stop
					return
				}
			}
		}
		select {
		case <-u.stop:
			return
		case <-time.After(u.restartSec):
		}
	}
}

// kill stops the loop and the supervisor with sig, and waits.
func (u *unit) kill(sig syscall.Signal) {
	u.mu.Lock()
	select {
	case <-u.stop:
	default:
		close(u.stop)
	}
	if u.cmd != nil {
		_ = u.cmd.Process.Signal(sig)
	}
	u.mu.Unlock()
	select {
	case <-u.done:
	case <-time.After(60 * time.Second):
		u.t.Errorf("the unit's supervisor did not stop on %v", sig)
	}
}

// pid is the running supervisor's pid (0 between starts).
func (u *unit) pid() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.cmd == nil {
		return 0
	}
	return u.cmd.Process.Pid
}

// history is every finished start so far.
func (u *unit) history() []unitStart {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]unitStart(nil), u.starts...)
}

func (u *unit) logTail() string {
	s := u.log.String()
	if len(s) > 20000 {
		s = "…" + s[len(s)-20000:]
	}
	return s
}

// checkSeq reports seq gaps and (with noRepeat) any seq received twice,
// even as the same batch again, of every collector over everything the
// recorder saw. (The recorder itself fails the test on a seq used for two
// different batches.)
func checkSeq(t *testing.T, r *fieldgatetest.Recorder, noRepeat bool) {
	t.Helper()
	for _, c := range collectors {
		seen := r.All(c)
		if len(seen) == 0 {
			t.Errorf("collector %s: no data seen", c)
			continue
		}
		if missing := r.Missing(c, 0); len(missing) > 0 {
			t.Errorf("collector %s: seq gaps %s", c, fieldgatetest.Ranges(missing))
		}
		count := map[uint64]int{}
		var repeats []uint64
		for _, s := range seen {
			if count[s.Seq]++; count[s.Seq] == 2 {
				repeats = append(repeats, s.Seq)
			}
		}
		if noRepeat && len(repeats) > 0 {
			t.Errorf("collector %s: seq received more than once: %s", c, fieldgatetest.Ranges(repeats))
		}
		t.Logf("collector %s: %d distinct seqs up to %d, no gap", c, len(count), r.MaxSeq(c))
	}
}

// waitData waits until every collector's seq passed what it was.
func (g *gateway) waitData(what string) {
	g.t.Helper()
	from := map[string]uint64{}
	for _, c := range collectors {
		from[c] = g.seqs.MaxSeq(c)
	}
	testpeer.WaitFor(g.t, 60*time.Second, what, func() bool {
		for _, c := range collectors {
			if g.seqs.MaxSeq(c) < from[c]+3 {
				return false
			}
		}
		return true
	})
}
