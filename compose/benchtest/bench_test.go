// Package benchtest runs the lab bench (compose/docker-compose.yml) for real:
// a private Docker engine, the project's images built offline and loaded
// with `docker load`, `docker-compose up`, readings read from the bench's
// broker, then `docker-compose down -v` — and checks that nothing is left
// behind. It is its own package because it is slow (it builds four images).
package benchtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"fieldgate/devices/devsim"
	"fieldgate/devices/profiles"
	"fieldgate/internal/testpeer"
)

// batch is the part of a reading batch the test looks at.
type batch struct {
	Collector string `json:"collector"`
	Device    string `json:"device"`
	Seq       int64  `json:"seq"`
	Readings  []struct {
		Tag     string `json:"tag"`
		Quality string `json:"quality"`
		Error   string `json:"error"`
	} `json:"readings"`
}

// TestComposeBench brings the whole bench up on a private dockerd — broker,
// devsim (Modbus TCP and OPC UA), both collectors, and the `serial`
// profile's collector on a socat pty line served by devsim RTU — waits for
// good readings from every collector (seq at least 3), and brings it down.
func TestComposeBench(t *testing.T) {
	testpeer.Require(t, "root", "docker", "socat")
	composeDir, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	before := hostNetState(t)
	t.Cleanup(func() { checkHostNetState(t, before) }) // runs last, after the engine stopped

	images := buildImages(t, filepath.Dir(composeDir))
	d := testpeer.Dockerd(t)
	for _, img := range images {
		if _, err := d.Run("load", "-i", img); err != nil {
			t.Fatal(err)
		}
	}

	// The serial line: devsim RTU on one end of a pty pair, the container
	// gets the other end as /dev/ttyUSB0.
	master, slave := testpeer.PtyPair(t)
	p, err := profiles.Lookup("eastron-sdm120")
	if err != nil {
		t.Fatal(err)
	}
	sim, err := devsim.NewModbus(devsim.Config{RTU: slave, Serial: devsim.Serial{Baud: 9600}, Units: []devsim.Unit{{ID: 1, Profile: p}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	simDone := make(chan error, 1)
	go func() { simDone <- sim.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-simDone })
	if err := sim.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}

	port := testpeer.FreePort(t)
	files := []string{"-f", "docker-compose.yml", "-f", "testdata/serial-pty.yml"}
	if !fullCapabilities(t) {
		t.Log("this machine cannot run privileged containers under Docker 20.10 (capability bounding set incomplete): the serial collector runs unprivileged")
		files = append(files, "-f", "testdata/unprivileged.yml")
	}
	var id [4]byte
	_, _ = rand.Read(id[:])
	compose := func(args ...string) (string, error) {
		cmd := exec.Command(d.Compose, append(append(slices.Clone(files), "--profile", "serial"), args...)...)
		cmd.Dir = composeDir
		cmd.Env = d.Env("COMPOSE_PROJECT_NAME=fgbench"+hex.EncodeToString(id[:]),
			"BENCH_MQTT_PORT="+strconv.Itoa(port), "BENCH_SERIAL_PTY="+master)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("docker-compose %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	downed := false
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := compose("logs", "--no-color", "--tail", "30")
			t.Logf("bench logs:\n%s", out)
		}
		if !downed {
			if _, err := compose("down", "-v", "--remove-orphans", "-t", "5"); err != nil {
				t.Error(err)
			}
		}
	})
	if _, err := compose("up", "-d"); err != nil {
		t.Fatal(err)
	}

	broker := "127.0.0.1:" + strconv.Itoa(port)
	testpeer.WaitFor(t, 60*time.Second, "the bench broker on "+broker, func() bool {
		c, err := net.DialTimeout("tcp", broker, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	msgs := testpeer.Subscribe(t, broker, "fieldgate/bench01/data/#")
	want := map[string][]string{
		"modbus-bench": {"meter1", "meter2", "drive1", "oven1"},
		"opcua-bench":  {"boiler1"},
		"modbus-rs485": {"meter10"},
	}
	good := map[string]map[string]int64{} // collector -> device -> highest seq with every reading good
	done := func() bool {
		for c, devs := range want {
			for _, dev := range devs {
				if good[c][dev] < 3 {
					return false
				}
			}
		}
		return true
	}
	timeout := time.After(3 * time.Minute)
	for !done() {
		select {
		case m := <-msgs:
			var b batch
			if err := json.Unmarshal(m.Payload, &b); err != nil {
				t.Fatalf("%s: %v: %s", m.Topic, err, m.Payload)
			}
			if m.Topic != "fieldgate/bench01/data/"+b.Collector+"/"+b.Device {
				t.Errorf("batch of %s/%s on topic %s", b.Collector, b.Device, m.Topic)
			}
			allGood := len(b.Readings) > 0
			for _, r := range b.Readings {
				allGood = allGood && r.Quality == "good"
			}
			if allGood {
				if good[b.Collector] == nil {
					good[b.Collector] = map[string]int64{}
				}
				good[b.Collector][b.Device] = max(good[b.Collector][b.Device], b.Seq)
			}
		case <-timeout:
			t.Fatalf("no good batches with seq >= 3 from every collector and device within 3 min; got %v", good)
		}
	}
	t.Logf("good batches (highest seq): %v", good)

	// Finding devices from the bench, as compose/README.md shows it: the
	// collector image's scan against the simulated Modbus TCP units.
	out, err := compose("run", "--rm", "-T", "modbus", "scan", "--tcp", "devsim-modbus:5020", "--units", "1-5", "--timeout", "1s")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"unit 3 answers", "4 unit(s) found", "eaton-mmx "} {
		if !strings.Contains(out, want) {
			t.Errorf("scan from the bench lacks %q:\n%s", want, out)
		}
	}
	out, err = compose("run", "--rm", "-T", "opcua", "browse", "--endpoint", "opc.tcp://devsim-opcua:4840", "--policy", "None", "--mode", "None")
	if err != nil || !strings.Contains(out, "ns=1;s=boiler1.process_value") {
		t.Errorf("browse from the bench: %v\n%s", err, out)
	}

	if _, err := compose("down", "-v", "--remove-orphans", "-t", "5"); err != nil {
		t.Fatal(err)
	}
	downed = true
	for _, what := range [][]string{{"ps", "-aq"}, {"volume", "ls", "-q"}, {"network", "ls", "-q", "--filter", "type=custom"}} {
		out, err := d.Run(what...)
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(out) != "" {
			t.Errorf("docker %s after down: %q", strings.Join(what, " "), out)
		}
	}
}

// buildImages runs the project's own image build (firmware/build-images.sh,
// what `make images` runs) for this machine's platform only, into a
// temporary directory, and returns the four archives.
func buildImages(t *testing.T, repo string) []string {
	t.Helper()
	platform := map[string]string{"amd64": "linux/amd64", "arm64": "linux/arm64", "arm": "linux/arm/v7"}[runtime.GOARCH]
	if platform == "" {
		testpeer.Unavailable(t, "collector images", "no image platform for GOARCH "+runtime.GOARCH)
	}
	out := t.TempDir()
	cmd := exec.Command(filepath.Join(repo, "firmware", "build-images.sh"))
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "PLATFORMS="+platform, "OUT="+out, "BENCH_OUT="+out,
		"BUILD_DIR="+filepath.Join(out, "build"), "VERSION=benchtest")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build-images.sh: %v\n%s", err, b)
	}
	images, _ := filepath.Glob(filepath.Join(out, "*.tar"))
	slices.Sort(images)
	names := make([]string, len(images))
	for i, p := range images {
		names[i] = filepath.Base(p)
	}
	if want := []string{"collector-modbus.tar", "collector-opcua.tar", "devsim.tar", "mosquitto.tar"}; !slices.Equal(names, want) {
		t.Fatalf("images built: %v, want %v", names, want)
	}
	return images
}

// fullCapabilities reports whether this process holds every capability the
// kernel knows: what Docker 20.10 grants a privileged container.
func fullCapabilities(t *testing.T) bool {
	t.Helper()
	last, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return true
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(last)))
	if err != nil {
		return true
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return true
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "CapBnd:"); ok {
			bnd, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err != nil || bnd&(1<<(n+1)-1) == 1<<(n+1)-1
		}
	}
	return true
}

// netState is the host's network interfaces and iptables rules.
type netState struct {
	links    []string
	iptables string
}

func hostNetState(t *testing.T) netState {
	t.Helper()
	var s netState
	entries, err := os.ReadDir("/sys/class/net")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		s.links = append(s.links, e.Name())
	}
	if out, err := exec.Command("iptables-save").Output(); err == nil {
		s.iptables = string(out)
	}
	return s
}

// checkHostNetState: the engine left no bridge or veth interface and no
// iptables rule (other tests on the machine may add their own interfaces,
// so only Docker's kinds count).
func checkHostNetState(t *testing.T, before netState) {
	after := hostNetState(t)
	for _, l := range after.links {
		if !slices.Contains(before.links, l) && (strings.HasPrefix(l, "br-") || strings.HasPrefix(l, "veth") || strings.HasPrefix(l, "docker")) {
			t.Errorf("network interface %s left behind", l)
		}
	}
	if stripComments(after.iptables) != stripComments(before.iptables) {
		t.Errorf("iptables rules changed:\nbefore:\n%s\nafter:\n%s", before.iptables, after.iptables)
	}
}

// stripComments drops what changes by itself in iptables-save's output:
// comment lines (they carry a time) and the chains' packet counters.
func stripComments(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(l, "#") {
			out = append(out, counters.ReplaceAllString(l, ""))
		}
	}
	return strings.Join(out, "\n")
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)
