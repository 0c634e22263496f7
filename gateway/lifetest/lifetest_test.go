package lifetest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"golang.org/x/sys/unix"

	"fieldgate/gateway/supervisor"
	"fieldgate/internal/fieldgatetest"
	"fieldgate/internal/testpeer"
)

// TestMain removes the binaries the tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	fieldgatetest.Cleanup()
	os.Exit(code)
}

// Every collector here polls every 500 ms; waits are generous, for a
// loaded machine.
const (
	poll    = "500ms"
	backIn  = 60 * time.Second // the bound for coming back
	modbus  = "fieldgate/collector-modbus"
	holding = 1234
)

// tcpCollector is a Modbus TCP collector against slave at addr.
func tcpCollector(name, image, restart, addr string) string {
	return fmt.Sprintf(`  - name: %s
    image: %s
    poll_interval: %s
    restart: %s
    modbus:
      transport: tcp
      tcp: {address: %q}
      devices:
        - name: plc
          unit_id: 1
          tags:
            - {name: speed, table: holding_register, address: 0, type: uint16}
`, name, image, poll, restart, addr)
}

// startTCPGateway starts a gateway whose collectors (name and restart
// policy each) run the real Modbus collector image against one pymodbus TCP
// slave, and a recorder of its broker.
func startTCPGateway(t *testing.T, collectors ...[2]string) (*fieldgatetest.Gateway, *fieldgatetest.Recorder) {
	t.Helper()
	testpeer.Require(t, "pymodbus")
	g := fieldgatetest.NewGateway(t)
	g.DrainNotify()
	g.AddImage(modbus, "real", fieldgatetest.Collector(t, "modbus-collector", ""))
	slave := testpeer.PyModbus(t, testpeer.PyModbusConfig{Mode: "tcp", Units: map[int]testpeer.PyModbusUnit{1: {Holding: map[uint16]uint16{0: holding}}}})
	cfg := g.Header("")
	for _, c := range collectors {
		cfg += tcpCollector(c[0], modbus+":real", c[1], slave.Addr)
	}
	g.WriteRaw(cfg)
	rec := fieldgatetest.NewRecorder(t, g.Broker, "", "")
	g.Start()
	return g, rec
}

// runOK runs a fieldgate command and fails t unless it succeeds.
func runOK(t *testing.T, g *fieldgatetest.Gateway, args ...string) string {
	t.Helper()
	out, err := g.Run(args...)
	if err != nil {
		t.Fatalf("fieldgate %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// TestReboot: collectors with always and unless-stopped run, a third was
// stopped with `fieldgate stop`. Then every task, shim, containerd and
// fieldgate is SIGKILLed, containerd's state dir and runc's state are
// emptied as /run is by a reboot, and containerd and fieldgate start again.
// The first two publish again within 60 s with seq continuous (the killed
// collectors' files are intact: a kill is not a power cut); the stopped one
// stays stopped until `fieldgate start`, and then continues its seq too.
func TestReboot(t *testing.T) {
	t.Parallel()
	g, rec := startTCPGateway(t, [2]string{"always", "always"}, [2]string{"unless", "unless-stopped"}, [2]string{"stopped", "unless-stopped"})
	t0 := time.Now()
	all := []string{"always", "unless", "stopped"}
	back := []string{"always", "unless"}
	from := map[string]uint64{}
	rec.WaitRecovered(t, all, from, t0, 90*time.Second)

	out := runOK(t, g, "stop", "stopped", "--config", g.Config)
	if !strings.Contains(out, "stopped: stopped") {
		t.Errorf("fieldgate stop said %q", out)
	}
	if c := g.Collector("stopped"); c.State != supervisor.StateStopped || c.StoppedAt == nil || c.Pid != 0 {
		t.Fatalf("after fieldgate stop: %+v", c)
	}
	stoppedSeq := rec.MaxSeq("stopped")
	// Enough history that "continuous" means something.
	testpeer.WaitFor(t, 60*time.Second, "10 batches from each collector", func() bool {
		return rec.MaxSeq("always") >= 10 && rec.MaxSeq("unless") >= 10
	})
	rec.WaitRecovered(t, back, from, time.Now(), 30*time.Second)

	// The power goes.
	before := map[string]supervisor.CollectorStatus{}
	for _, n := range back {
		before[n] = g.Collector(n)
	}
	g.Kill(syscall.SIGKILL)
	killed := g.Ctrd.Reboot(t, t)
	for _, n := range back {
		if fieldgatetest.TaskRunning(before[n].Pid) {
			t.Fatalf("%s (pid %d) survived the reboot; killed %v", n, before[n].Pid, killed)
		}
	}
	last := map[string]uint64{}
	for _, n := range back {
		last[n] = rec.MaxSeq(n)
	}
	tBoot := time.Now()
	g.Start()
	for _, n := range back {
		c := g.WaitCollector(n, n+" running after the reboot", backIn, func(c supervisor.CollectorStatus) bool { return c.Pid != before[n].Pid })
		if c.Adopted || c.Restarts != before[n].Restarts+1 {
			t.Errorf("%s after the reboot: adopted %v, restarts %d -> %d; want a counted restart", n, c.Adopted, before[n].Restarts, c.Restarts)
		}
	}
	took := rec.WaitRecovered(t, back, from, tBoot, backIn)
	t.Logf("FIGURE reboot: both collectors publishing %v after fieldgate started again; seq continuous (always %d -> %d, unless-stopped %d -> %d)",
		took.Round(10*time.Millisecond), last["always"], rec.MaxSeq("always"), last["unless"], rec.MaxSeq("unless"))

	// The stopped collector stayed stopped: no task, no data.
	if c := g.Collector("stopped"); c.State != supervisor.StateStopped {
		t.Errorf("stopped collector after the reboot: %+v", c)
	}
	if running := g.Ctrd.TaskPids(t); running["stopped"] != 0 {
		t.Errorf("stopped collector has a task: pid %d", running["stopped"])
	}
	if got := rec.MaxSeq("stopped"); got != stoppedSeq {
		t.Errorf("stopped collector published seq %d after its stop at %d", got, stoppedSeq)
	}

	// fieldgate start undoes the stop; its seq goes on where it was.
	out = runOK(t, g, "start", "stopped", "--config", g.Config)
	if !strings.Contains(out, "stopped: running") {
		t.Errorf("fieldgate start said %q", out)
	}
	rec.WaitRecovered(t, all, from, time.Now(), backIn)
	if miss := rec.Missing("stopped", 0); len(miss) > 0 {
		t.Errorf("stopped collector: seqs %s missing across its stop and start", fieldgatetest.Ranges(miss))
	}
	if _, err := g.Run("stop", "nope", "--config", g.Config); err == nil {
		t.Error("fieldgate stop of an unknown collector succeeded")
	}
}

// TestUpgrade: a second image archive with another collector version is
// written over the first in images_dir (a new bundle) and fieldgate is
// restarted (SIGTERM, start: `systemctl restart`). The collector is
// recreated on the new digest and reports the new version within 60 s,
// with no seq gap and no seq repeated for another batch; the old image is
// pruned once the new one runs.
func TestUpgrade(t *testing.T) {
	t.Parallel()
	testpeer.Require(t, "pymodbus")
	g := fieldgatetest.NewGateway(t)
	g.DrainNotify()
	archive := "collector-modbus.tar"
	bin1 := fieldgatetest.Collector(t, "modbus-collector", "1.0.0")
	bin2 := fieldgatetest.Collector(t, "modbus-collector", "2.0.0") // built before anything runs
	v1 := g.AddArchive(archive, modbus, bin1, "1.0.0", "latest")
	slave := testpeer.PyModbus(t, testpeer.PyModbusConfig{Mode: "tcp", Units: map[int]testpeer.PyModbusUnit{1: {Holding: map[uint16]uint16{0: holding}}}})
	const name = "line3"
	g.WriteRaw(g.Header("") + tcpCollector(name, modbus+":latest", "unless-stopped", slave.Addr))
	rec := fieldgatetest.NewRecorder(t, g.Broker, "", "")
	g.Start()
	from := map[string]uint64{}
	rec.WaitRecovered(t, []string{name}, from, time.Now(), 90*time.Second)
	testpeer.WaitFor(t, 30*time.Second, "version 1.0.0 in the collector status", func() bool { return rec.Latest(name).Version == "1.0.0" })
	old := g.Collector(name)
	if old.ImageDigest != v1 || !old.DigestMatches {
		t.Fatalf("before the upgrade: %+v, want digest %s", old, v1)
	}

	v2 := g.AddArchive(archive, modbus, bin2, "2.0.0", "latest")
	g.Kill(syscall.SIGTERM)
	if !fieldgatetest.TaskRunning(old.Pid) {
		t.Fatal("the collector stopped with the supervisor")
	}
	t0 := time.Now()
	g.Start()
	c := g.WaitCollector(name, "collector on the new digest", backIn, func(c supervisor.CollectorStatus) bool {
		return c.ImageDigest == v2 && c.DigestMatches
	})
	testpeer.WaitFor(t, backIn-time.Since(t0), "version 2.0.0 in the collector status", func() bool { return rec.Latest(name).Version == "2.0.0" })
	took := time.Since(t0)
	if c.Adopted || c.Pid == old.Pid || fieldgatetest.TaskRunning(old.Pid) {
		t.Errorf("after the upgrade: %+v, old task %d running %v", c, old.Pid, fieldgatetest.TaskRunning(old.Pid))
	}
	rec.WaitRecovered(t, []string{name}, from, time.Now(), backIn)
	if miss := rec.Missing(name, 0); len(miss) > 0 {
		t.Errorf("seqs %s missing across the upgrade", fieldgatetest.Ranges(miss))
	}
	t.Logf("FIGURE upgrade: new version reported %v after fieldgate restarted; seq %d..%d without a gap", took.Round(10*time.Millisecond), 1, rec.MaxSeq(name))

	// The old version's image goes once the new one runs.
	testpeer.WaitFor(t, 30*time.Second, "the 1.0.0 image pruned", func() bool {
		imgs := images(t, g.Ctrd)
		_, old := imgs["docker.io/fieldgate/collector-modbus:1.0.0"]
		return !old && imgs["docker.io/fieldgate/collector-modbus:2.0.0"] == v2 && imgs["docker.io/fieldgate/collector-modbus:latest"] == v2
	})
}

// images lists the peer's images in its namespace, name to digest.
func images(t *testing.T, p *testpeer.ContainerdPeer) map[string]string {
	t.Helper()
	client, err := containerd.New(p.Address, containerd.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), p.Namespace), 10*time.Second)
	defer cancel()
	list, err := client.ListImages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, img := range list {
		out[img.Name()] = img.Target().Digest.String()
	}
	return out
}

// TestReplugByPath runs the real Modbus RTU collector in a container on a
// serial line configured by a udev-style by-path name (colons in it, mapped
// to /dev/ttyUSB0: `validate` accepts it and it runs). The line is then
// unplugged and plugged back as a pty with another number behind the same
// link: the supervisor follows the new node, recreating the collector, which
// reads again without anyone touching it.
func TestReplugByPath(t *testing.T) {
	t.Parallel()
	testpeer.Require(t, "socat", "pymodbus")
	g := fieldgatetest.NewGateway(t)
	g.DrainNotify()
	g.AddImage(modbus, "real", fieldgatetest.Collector(t, "modbus-collector", ""))
	lines := t.TempDir()
	socat, ours, theirs := ptyLinks(t, lines)
	byPath := filepath.Join(lines, "serial", "by-path", "pci-0000:00:14.0-usb-0:1:1.0-port0")
	if err := os.MkdirAll(filepath.Dir(byPath), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(ours, byPath); err != nil { // as udev links to the tty
		t.Fatal(err)
	}
	slave := testpeer.PyModbus(t, testpeer.PyModbusConfig{Mode: "rtu", Port: theirs, Baud: 19200, Units: map[int]testpeer.PyModbusUnit{
		1: {Holding: map[uint16]uint16{0: holding}},
	}})
	const name = "rtu-line"
	g.WriteRaw(g.Header("") + fmt.Sprintf(`  - name: %s
    image: %s:real
    poll_interval: %s
    devices: ["%s:/dev/ttyUSB0"]
    modbus:
      transport: rtu
      serial: {port: /dev/ttyUSB0, baud: 19200}
      timeout: 300ms
      devices:
        - name: meter1
          unit_id: 1
          tags:
            - {name: speed, table: holding_register, address: 0, type: uint16}
`, name, modbus, poll, byPath))
	if out := runOK(t, g, "validate", "--config", g.Config); !strings.Contains(out, "ok") {
		t.Errorf("validate said %q", out)
	}
	rec := fieldgatetest.NewRecorder(t, g.Broker, "", "")
	g.Start()
	before := g.WaitCollector(name, "collector running", backIn, func(supervisor.CollectorStatus) bool { return true })
	rec.WaitGood(t, name, time.Now(), 60*time.Second)
	if len(before.Devices) != 1 || before.Devices[0].Path != byPath || !strings.HasPrefix(before.Devices[0].Node, "/dev/pts/") {
		t.Fatalf("devices in /status: %+v", before.Devices)
	}

	// Unplug: the line and its ends go. Hold the freed pty numbers, so the
	// line comes back under other ones.
	theirsNode, err := filepath.EvalSymlinks(theirs)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Kill(-socat.Cmd.Process.Pid, syscall.SIGKILL)
	slave.Stop()
	testpeer.WaitFor(t, 10*time.Second, "the pty links gone", func() bool {
		_, err := os.Stat(ours)
		return err != nil
	})
	holdPtys(t, ptyNumber(t, before.Devices[0].Node), ptyNumber(t, theirsNode))
	t0 := time.Now()
	_, _, _ = ptyLinks(t, lines) // plugged back: same links, new ptys
	slave.Restart()
	after := g.WaitCollector(name, "collector recreated on the new pty", backIn, func(c supervisor.CollectorStatus) bool {
		return c.Pid != before.Pid && len(c.Devices) == 1 && c.Devices[0].Node != before.Devices[0].Node
	})
	rec.WaitGood(t, name, time.Now(), 60*time.Second)
	t.Logf("FIGURE re-plug: %s -> %s followed, good readings again %v after the line came back",
		before.Devices[0].Node, after.Devices[0].Node, time.Since(t0).Round(10*time.Millisecond))
	if miss := rec.Missing(name, 0); len(miss) > 0 {
		t.Errorf("seqs %s missing across the re-plug", fieldgatetest.Ranges(miss))
	}
}

// ptyLinks is testpeer.PtyLinks with both ptys readable and writable by
// everyone, as a udev rule would make a serial adapter for its group: the
// collector need not run as root.
func ptyLinks(t *testing.T, dir string) (*testpeer.Process, string, string) {
	t.Helper()
	p, a, b := testpeer.PtyLinks(t, dir)
	for _, l := range []string{a, b} {
		if err := os.Chmod(l, 0o666); err != nil {
			t.Fatal(err)
		}
	}
	return p, a, b
}

func ptyNumber(t *testing.T, node string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimPrefix(node, "/dev/pts/"))
	if err != nil {
		t.Fatalf("pty node %q: %v", node, err)
	}
	return n
}

// holdPtys takes the pty numbers want, freed a moment ago, until the test
// ends, so the line cannot come back under them. Numbers are handed out
// lowest first: once a number above all of want comes, those not taken are
// still in use (the old collector keeps its end open), which keeps them from
// the new line just as well. The other masters opened on the way are closed.
func holdPtys(t *testing.T, want ...int) {
	t.Helper()
	var spare []*os.File
	defer func() {
		for _, f := range spare {
			f.Close()
		}
	}()
	for held := 0; held < len(want); {
		f, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
		if err != nil {
			t.Fatal(err)
		}
		n, err := unix.IoctlGetInt(int(f.Fd()), unix.TIOCGPTN)
		if err != nil {
			f.Close()
			t.Fatal(err)
		}
		switch {
		case slices.Contains(want, n):
			held++
			t.Cleanup(func() { f.Close() })
		case n > slices.Max(want):
			f.Close()
			return
		default:
			spare = append(spare, f)
		}
	}
}

// TestContainerdRestart: containerd alone dies and comes back while
// fieldgate runs (a containerd crash or upgrade; shims and tasks run on).
// While it is down, one collector's task is SIGKILLed. Afterwards the
// untouched collector is still the same task, adopted rather than
// restarted; the killed one runs again by its policy, its exit (137, kept
// by its shim) recorded and the restart counted; neither loses a seq.
func TestContainerdRestart(t *testing.T) {
	t.Parallel()
	g, rec := startTCPGateway(t, [2]string{"kept", "unless-stopped"}, [2]string{"killed", "always"})
	names := []string{"kept", "killed"}
	from := map[string]uint64{}
	rec.WaitRecovered(t, names, from, time.Now(), 90*time.Second)
	before := map[string]supervisor.CollectorStatus{}
	for _, n := range names {
		before[n] = g.Collector(n)
	}

	g.Ctrd.KillDaemon(t)
	t0 := time.Now()
	if err := syscall.Kill(int(before["killed"].Pid), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testpeer.WaitFor(t, 10*time.Second, "the killed task gone", func() bool { return !fieldgatetest.TaskRunning(before["killed"].Pid) })
	if !fieldgatetest.TaskRunning(before["kept"].Pid) {
		t.Fatal("the kept task died with containerd")
	}
	g.Ctrd.Restart(t, t)

	c := g.WaitCollector("killed", "the killed collector running again", backIn, func(c supervisor.CollectorStatus) bool {
		return c.State == supervisor.StateRunning && c.Pid != before["killed"].Pid
	})
	took := time.Since(t0)
	if c.Restarts != before["killed"].Restarts+1 || c.LastExit == nil || c.LastExit.Code != 137 {
		t.Errorf("killed collector: restarts %d -> %d, last_exit %+v; want a counted restart after exit 137", before["killed"].Restarts, c.Restarts, c.LastExit)
	}
	k := g.WaitCollector("kept", "the kept collector running", backIn, func(c supervisor.CollectorStatus) bool { return c.State == supervisor.StateRunning })
	if k.Pid != before["kept"].Pid || k.Restarts != before["kept"].Restarts {
		t.Errorf("kept collector touched: pid %d -> %d, restarts %d -> %d", before["kept"].Pid, k.Pid, before["kept"].Restarts, k.Restarts)
	}
	rec.WaitRecovered(t, names, from, time.Now(), backIn)
	for _, n := range names {
		if miss := rec.Missing(n, 0); len(miss) > 0 {
			t.Errorf("%s: seqs %s missing across the containerd restart", n, fieldgatetest.Ranges(miss))
		}
	}
	t.Logf("FIGURE containerd restart: killed collector running again %v after containerd died (restarts %d -> %d, last_exit %+v); kept collector adopted, pid %d unchanged",
		took.Round(10*time.Millisecond), before["killed"].Restarts, c.Restarts, c.LastExit, k.Pid)
}
