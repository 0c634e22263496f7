// Package testpeer starts the real peers fieldgate's tests talk to — mosquitto,
// socat pty pairs, and (in sibling files) pymodbus, node-opcua and a private
// containerd — on loopback with free ports, each stopped when its test ends.
//
// A test that needs a peer calls Require first: when the peer is missing the
// test is skipped, except under FIELDGATE_REQUIRE_ALL=1 (CI), where it fails,
// so CI never passes by skipping.
package testpeer

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// requirements maps a peer name to the programs it needs.
var requirements = map[string][]string{
	"mosquitto":  {"mosquitto"},
	"socat":      {"socat"},
	"pymodbus":   {"/usr/bin/python3"},
	"node":       {"node", "npm"},
	"containerd": {"containerd", "runc"},
	"mbpoll":     {"mbpoll"},
	"tmux":       {"tmux"},
	"minisign":   {"minisign"},
}

// Require skips the test when a peer is not available on this machine, or
// fails it when FIELDGATE_REQUIRE_ALL=1. Names: mosquitto, socat, pymodbus,
// node, containerd, mbpoll, tmux, minisign, root.
func Require(t testing.TB, names ...string) {
	t.Helper()
	for _, name := range names {
		if problem := missing(name); problem != "" {
			Unavailable(t, name, problem)
		}
	}
}

// Unavailable skips the test because peer is missing (problem says how),
// or fails it when FIELDGATE_REQUIRE_ALL=1, as CI sets it.
func Unavailable(t testing.TB, peer, problem string) {
	t.Helper()
	if os.Getenv("FIELDGATE_REQUIRE_ALL") == "1" {
		t.Fatalf("required peer %q is not available: %s (FIELDGATE_REQUIRE_ALL=1; run scripts/setup-host.sh and scripts/setup-node.sh)", peer, problem)
	}
	t.Skipf("peer %q not available: %s (set FIELDGATE_REQUIRE_ALL=1 to make this a failure)", peer, problem)
}

func missing(name string) string {
	switch name {
	case "root":
		if os.Geteuid() != 0 {
			return "not running as root"
		}
		return ""
	case "pymodbus":
		if _, err := os.Stat("/usr/bin/python3"); err != nil {
			return "/usr/bin/python3 not found"
		}
		if out, err := exec.Command("/usr/bin/python3", "-c", "import pymodbus, serial_asyncio").CombinedOutput(); err != nil {
			return fmt.Sprintf("python3-pymodbus or python3-serial-asyncio not installed: %s", strings.TrimSpace(string(out)))
		}
		return ""
	case "containerd":
		if os.Geteuid() != 0 {
			return "containerd needs root"
		}
	}
	progs, ok := requirements[name]
	if !ok {
		return fmt.Sprintf("unknown peer %q", name)
	}
	for _, p := range progs {
		if _, err := exec.LookPath(p); err != nil {
			return fmt.Sprintf("%s not found in PATH", p)
		}
	}
	return ""
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// WaitFor polls cond every 20 ms until it returns true or the timeout ends,
// then fails the test with what.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Process is a peer process started for a test.
type Process struct {
	Cmd  *exec.Cmd
	Log  *SyncBuffer
	done chan struct{}
	err  error
}

// Start runs name with args, its output captured, and kills its process
// group when the test ends.
func Start(t testing.TB, name string, args ...string) *Process {
	t.Helper()
	return StartCmd(t, name, exec.Command(name, args...))
}

// StartCmd runs a prepared command (its environment set, say) like Start;
// name labels its output in the test log.
func StartCmd(t testing.TB, name string, cmd *exec.Cmd) *Process {
	t.Helper()
	buf := &SyncBuffer{}
	cmd.Stdout, cmd.Stderr = buf, buf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &Process{Cmd: cmd, Log: buf, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, buf.String())
		}
	})
	return p
}

// Exited is closed once the process has exited; Err then tells how.
func (p *Process) Exited() <-chan struct{} { return p.done }

// Err is the process's exit error (nil for status 0), once Exited.
func (p *Process) Err() error { return p.err }

// Kill SIGKILLs the process group and waits for the process to exit.
func (p *Process) Kill() {
	_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// SyncBuffer is an io.Writer safe for concurrent use, read with String.
type SyncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Broker is a private mosquitto instance.
type Broker struct {
	// Addr is "127.0.0.1:PORT".
	Addr string
	// ConfigPath is mosquitto's config file, for restarts with the same port.
	ConfigPath string
	proc       *Process
	t          testing.TB
}

// BrokerOption changes the mosquitto configuration.
type BrokerOption func(*brokerConfig)

type brokerConfig struct {
	port     int
	password map[string]string
	extra    []string
}

// WithPort pins the broker to a port (to restart a broker where clients
// expect it).
func WithPort(port int) BrokerOption { return func(c *brokerConfig) { c.port = port } }

// WithPassword makes the broker require these username/password pairs.
func WithPassword(users map[string]string) BrokerOption {
	return func(c *brokerConfig) { c.password = users }
}

// WithConfigLines adds raw mosquitto.conf lines (TLS listeners and the like).
func WithConfigLines(lines ...string) BrokerOption {
	return func(c *brokerConfig) { c.extra = append(c.extra, lines...) }
}

// Mosquitto starts a private mosquitto on a free loopback port and waits
// until it accepts MQTT connections. It returns "127.0.0.1:PORT".
func Mosquitto(t testing.TB, opts ...BrokerOption) string {
	return StartBroker(t, opts...).Addr
}

// StartBroker is Mosquitto returning the Broker, so a test can stop and
// restart it.
func StartBroker(t testing.TB, opts ...BrokerOption) *Broker {
	t.Helper()
	Require(t, "mosquitto")
	cfg := brokerConfig{}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.port == 0 {
		cfg.port = FreePort(t)
	}
	dir := t.TempDir()
	lines := []string{
		// mosquitto run as root drops to user mosquitto unless told otherwise.
		"user root",
		fmt.Sprintf("listener %d 127.0.0.1", cfg.port),
		// Sessions survive a restart (saved every second and at a clean
		// stop), so a persistent subscriber that reconnects after a publisher
		// still gets what was published in between — without it, a broker
		// restart test could lose messages to the test's own subscriber.
		"persistence true",
		"persistence_location " + dir + "/",
		"autosave_interval 1",
		"log_dest stdout",
		"max_queued_messages 100000",
	}
	if cfg.password != nil {
		pwFile := filepath.Join(dir, "passwd")
		var b strings.Builder
		for u, p := range cfg.password {
			fmt.Fprintf(&b, "%s:%s\n", u, p)
		}
		if err := os.WriteFile(pwFile, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("mosquitto_passwd", "-U", pwFile).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd: %v: %s", err, out)
		}
		lines = append(lines, "allow_anonymous false", "password_file "+pwFile)
	} else {
		lines = append(lines, "allow_anonymous true")
	}
	lines = append(lines, cfg.extra...)
	conf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := &Broker{Addr: fmt.Sprintf("127.0.0.1:%d", cfg.port), ConfigPath: conf, t: t}
	b.Start()
	return b
}

// Start (re)starts the broker with its config and waits until it listens.
func (b *Broker) Start() {
	b.t.Helper()
	b.proc = Start(b.t, "mosquitto", "-c", b.ConfigPath)
	WaitFor(b.t, 10*time.Second, "mosquitto on "+b.Addr, func() bool {
		c, err := net.DialTimeout("tcp", b.Addr, 200*time.Millisecond)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

// Stop stops the broker (SIGTERM: it saves its sessions) and waits until
// its port is closed.
func (b *Broker) Stop() {
	if b.proc == nil {
		return
	}
	_ = b.proc.Cmd.Process.Signal(syscall.SIGTERM)
	WaitFor(b.t, 10*time.Second, "mosquitto to stop", func() bool {
		c, err := net.DialTimeout("tcp", b.Addr, 100*time.Millisecond)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	b.proc = nil
}

// Message is one MQTT message received by Subscribe.
type Message struct {
	Topic    string
	Payload  []byte
	Retained bool
}

// Subscribe connects to broker ("host:port") and delivers every message on
// topic (wildcards allowed) to the returned channel, which holds up to 100000
// messages; it disconnects when the test ends. Its session is persistent, so
// across a broker restart it misses nothing that was published while it was
// reconnecting.
func Subscribe(t testing.TB, broker, topic string) <-chan Message {
	t.Helper()
	return SubscribeAs(t, broker, topic, "", "")
}

// SubscribeAs is Subscribe with a user name and password, for a broker
// started WithPassword.
func SubscribeAs(t testing.TB, broker, topic, user, password string) <-chan Message {
	t.Helper()
	ch := make(chan Message, 100000)
	opts := mqtt.NewClientOptions().
		SetUsername(user).
		SetPassword(password).
		AddBroker("tcp://" + broker).
		SetClientID(fmt.Sprintf("testsub-%d-%d", os.Getpid(), time.Now().UnixNano())).
		SetCleanSession(false).
		SetOrderMatters(true).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(100 * time.Millisecond).
		SetMaxReconnectInterval(500 * time.Millisecond)
	handler := func(_ mqtt.Client, m mqtt.Message) {
		select {
		case ch <- Message{Topic: m.Topic(), Payload: append([]byte(nil), m.Payload()...), Retained: m.Retained()}:
		default:
			t.Errorf("testpeer.Subscribe: channel full, message on %s dropped", m.Topic())
		}
	}
	opts.SetOnConnectHandler(func(c mqtt.Client) {
		c.Subscribe(topic, 1, handler)
	})
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe to %s at %s: connect: %v", topic, broker, tok.Error())
	}
	// The subscription is made in the connect handler; wait until the broker
	// confirms it by subscribing once more synchronously.
	st := c.Subscribe(topic, 1, handler)
	if !st.WaitTimeout(10*time.Second) || st.Error() != nil {
		t.Fatalf("subscribe to %s: %v", topic, st.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return ch
}

// PtyPair starts socat with two linked pseudo-terminals (raw, no echo), the
// way a test stands in for an RS-485 line: the collector opens one end, the
// simulated slave the other. It returns both paths. Each end is made
// read-write for group dialout (mode 0660), as a udev rule does for a real
// USB serial adapter, so a collector that is not root reaches it through its
// group; devpts alone would leave it 0620.
func PtyPair(t testing.TB) (string, string) {
	t.Helper()
	Require(t, "socat")
	return startPtyPair(t, ptyOptions)
}

// ptyOptions are socat's options for a pty end like a serial adapter's node.
var ptyOptions = "pty,raw,echo=0,perm=0660,group=" + SerialGroup()

// SerialGroup is the numeric id of the group owning serial lines (Debian's
// dialout, 20 when the host has no such group).
func SerialGroup() string {
	if g, err := user.LookupGroup("dialout"); err == nil {
		return g.Gid
	}
	return "20"
}

// PtyLinks is PtyPair with stable symlink paths (dir/a, dir/b) that socat
// creates, so a test can close the line and plug it back at the same path.
func PtyLinks(t testing.TB, dir string) (*Process, string, string) {
	t.Helper()
	Require(t, "socat")
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	p := Start(t, "socat", "-d", "-d", ptyOptions+",link="+a, ptyOptions+",link="+b)
	WaitFor(t, 10*time.Second, "socat pty links with their group's access", func() bool {
		stA, errA := os.Stat(a)
		stB, errB := os.Stat(b)
		return errA == nil && errB == nil && stA.Mode().Perm() == 0o660 && stB.Mode().Perm() == 0o660
	})
	return p, a, b
}

var ptyRe = regexp.MustCompile(`PTY is (/dev/pts/\d+)`)

func startPtyPair(t testing.TB, spec string) (string, string) {
	t.Helper()
	cmd := exec.Command("socat", "-d", "-d", spec, spec)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start socat: %v", err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	paths := make(chan []string, 1)
	go func() {
		var found []string
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := ptyRe.FindStringSubmatch(sc.Text()); m != nil {
				found = append(found, m[1])
			}
			// socat names each pty before it applies perm= and group=;
			// both ends are ready once it starts moving data.
			if len(found) == 2 && strings.Contains(sc.Text(), "starting data transfer loop") {
				paths <- found
				break
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	select {
	case p := <-paths:
		return p[0], p[1]
	case <-ctx.Done():
		t.Fatalf("socat did not report two ptys")
	}
	return "", ""
}

// Atoi is strconv.Atoi that fails the test on error.
func Atoi(t testing.TB, s string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		t.Fatalf("atoi %q: %v", s, err)
	}
	return n
}
