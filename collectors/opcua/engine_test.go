package opcua

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"fieldgate/collectors/reading"
	"fieldgate/internal/testpeer"
)

// recSink records what the engine hands to its Sink.
type recSink struct {
	mu      sync.Mutex
	batches []reading.Batch
	status  map[string]string
}

func (s *recSink) Publish(_ context.Context, b reading.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b.Readings = slices.Clone(b.Readings) // the engine reuses them
	s.batches = append(s.batches, b)
	return nil
}

func (s *recSink) SetDeviceStatus(device, status string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.status == nil {
		s.status = map[string]string{}
	}
	s.status[device] = status
}

func (s *recSink) deviceStatus(device string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status[device]
}

func (s *recSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.batches)
}

// readings returns every reading of device/tag in batches from index from on.
func (s *recSink) readings(from int, device, tag string) []reading.Reading {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []reading.Reading
	for _, b := range s.batches[min(from, len(s.batches)):] {
		if b.Device != device {
			continue
		}
		for _, r := range b.Readings {
			if r.Tag == tag {
				out = append(out, r)
			}
		}
	}
	return out
}

// lastGood returns the latest good reading of device/tag since from.
func (s *recSink) lastGood(from int, device, tag string) (reading.Reading, bool) {
	rs := s.readings(from, device, tag)
	for i := len(rs) - 1; i >= 0; i-- {
		if rs[i].Quality == reading.Good {
			return rs[i], true
		}
	}
	return reading.Reading{}, false
}

// runEngine starts an engine on cfg and stops it (with a deadline) when the
// test ends.
func runEngine(t *testing.T, cfg Config, opts ...Option) (*recSink, string) {
	t.Helper()
	sink := &recSink{}
	dataDir := t.TempDir()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts = append([]Option{WithDataDir(dataDir), WithPollInterval(500 * time.Millisecond), WithLogger(log),
		WithBackoff(200*time.Millisecond, 2*time.Second)}, opts...)
	e, err := New(cfg, sink, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return within 10s of cancellation")
		}
	})
	return sink, dataDir
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// known are the node-opcua server's fixed variables and their values.
var known = []struct {
	device, name, node string
	want               any // nil: changing value, only the type is checked
	typ                string
}{
	{"boiler1", "temperature", "ns=1;s=Boiler1.Temperature", 21.5, "float64"},
	{"boiler1", "running", "ns=1;s=Boiler1.Running", true, "bool"},
	{"boiler1", "name", "ns=1;s=Boiler1.Name", "boiler-1", "string"},
	{"boiler1", "total", "ns=1;s=Boiler1.Total", uint64(9000000000), "uint64"},
	{"boiler1", "offset", "ns=1;s=Boiler1.Offset", int64(-42), "int64"},
	{"boiler1", "pressure", "ns=1;s=Boiler1.Pressure", 1.25, "float64"},
	{"boiler1", "counter", "ns=1;s=Boiler1.Counter", nil, "int64"},
	{"pump1", "speed", "ns=1;s=Pump1.Speed", uint64(1450), "uint64"},
	{"pump1", "level", "ns=1;s=Pump1.Level", nil, "float64"},
}

func knownNodes() []Node {
	var ns []Node
	for _, k := range known {
		ns = append(ns, Node{Device: k.device, Name: k.name, NodeID: k.node, Unit: "u"})
	}
	return ns
}

var insecure = &Security{Policy: PolicyNone, Mode: SecModeNone}

const waitLong = 90 * time.Second

// checkKnown waits until every known variable delivered a good reading of
// the right value and Go type since batch index from, and the counter moved.
func checkKnown(t *testing.T, sink *recSink, from int) {
	t.Helper()
	for _, k := range known {
		testpeer.WaitFor(t, waitLong, fmt.Sprintf("a good reading of %s/%s", k.device, k.name), func() bool {
			_, ok := sink.lastGood(from, k.device, k.name)
			return ok
		})
		r, _ := sink.lastGood(from, k.device, k.name)
		if got := fmt.Sprintf("%T", r.Value); got != k.typ {
			t.Errorf("%s/%s: value %v has type %s, want %s", k.device, k.name, r.Value, got, k.typ)
		}
		if k.want != nil && r.Value != k.want {
			t.Errorf("%s/%s = %#v, want %#v", k.device, k.name, r.Value, k.want)
		}
		if r.Unit != "u" || r.TS.IsZero() {
			t.Errorf("%s/%s: unit %q ts %v, want unit u and a timestamp", k.device, k.name, r.Unit, r.TS)
		}
	}
	first, _ := sink.lastGood(from, "boiler1", "counter")
	testpeer.WaitFor(t, waitLong, "the counter to change", func() bool {
		r, _ := sink.lastGood(from, "boiler1", "counter")
		return r.Value.(int64) > first.Value.(int64)
	})
}

// TestNodeOPCUA runs the collector against one node-opcua server in both
// modes, with an unknown node among valid ones, and through a server that
// freezes.
func TestNodeOPCUA(t *testing.T) {
	srv := testpeer.OPCUA(t, testpeer.OPCUAConfig{})

	t.Run("subscribe", func(t *testing.T) {
		sink, _ := runEngine(t, Config{Endpoint: srv.Endpoint, Security: insecure, Nodes: knownNodes()})
		checkKnown(t, sink, 0)
		// Batches are per device.
		sink.mu.Lock()
		for _, b := range sink.batches {
			for _, r := range b.Readings {
				if (b.Device == "pump1") != (r.Tag == "speed" || r.Tag == "level") {
					t.Errorf("reading %s in batch of device %s", r.Tag, b.Device)
				}
			}
		}
		sink.mu.Unlock()
		if st := sink.deviceStatus("boiler1"); st != "ok" {
			t.Errorf("status of boiler1 = %q, want ok", st)
		}
	})

	t.Run("poll", func(t *testing.T) {
		sink, _ := runEngine(t, Config{Endpoint: srv.Endpoint, Mode: ModePoll, Security: insecure, Nodes: knownNodes()})
		checkKnown(t, sink, 0)
		// Every poll reports every tag of the device.
		testpeer.WaitFor(t, waitLong, "three polls", func() bool { return len(sink.readings(0, "pump1", "speed")) >= 3 })
	})

	unknown := append(knownNodes(), Node{Device: "boiler1", Name: "ghost", NodeID: "ns=1;s=Boiler1.DoesNotExist"})
	for _, mode := range []string{ModeSubscribe, ModePoll} {
		t.Run("unknown node "+mode, func(t *testing.T) {
			sink, _ := runEngine(t, Config{Endpoint: srv.Endpoint, Mode: mode, Security: insecure, Nodes: unknown},
				WithItemRetry(time.Second))
			checkKnown(t, sink, 0)
			// Reported bad alone, and (subscribe) retried: it shows up again.
			testpeer.WaitFor(t, waitLong, "the unknown node reported bad twice", func() bool {
				return len(sink.readings(0, "boiler1", "ghost")) >= 2
			})
			for _, r := range sink.readings(0, "boiler1", "ghost") {
				if r.Quality != reading.Bad || r.Error != "BadNodeIdUnknown" || r.Value != nil {
					t.Errorf("ghost reading = %+v, want bad BadNodeIdUnknown with no value", r)
				}
			}
			if st := sink.deviceStatus("boiler1"); st != "ok" {
				t.Errorf("status of boiler1 = %q, want ok (one bad tag among good ones)", st)
			}
		})
	}

	// Every supported policy, with the server's certificate trusted.
	for _, sec := range []Security{
		{Policy: PolicyBasic256Sha256, Mode: SecModeSign},
		{Policy: PolicyAes128Sha256RsaOaep, Mode: SecModeSignAndEncrypt},
		{Policy: PolicyAes256Sha256RsaPss, Mode: SecModeSignAndEncrypt},
	} {
		t.Run(sec.Policy+"/"+sec.Mode, func(t *testing.T) {
			trust := t.TempDir()
			b, err := os.ReadFile(srv.CertFile)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(trust, "server.pem"), b, 0o644); err != nil {
				t.Fatal(err)
			}
			sink, _ := runEngine(t, Config{Endpoint: srv.Endpoint, Security: &sec, TrustDir: trust, Nodes: knownNodes()[:3]})
			testpeer.WaitFor(t, waitLong, "a good temperature", func() bool {
				_, ok := sink.lastGood(0, "boiler1", "temperature")
				return ok
			})
		})
	}

	t.Run("deadband", func(t *testing.T) {
		// Level moves by at most 1 per 100 ms; with an absolute deadband of
		// 5 every reported value is at least 5 away from the one before.
		nodes := []Node{
			{Device: "pump1", Name: "level", NodeID: "ns=1;s=Pump1.Level", Deadband: &Deadband{Type: DeadbandAbsolute, Value: 5}},
			{Device: "pump1", Name: "raw", NodeID: "ns=1;s=Pump1.Level"},
		}
		sink, _ := runEngine(t, Config{Endpoint: srv.Endpoint, Security: insecure, Nodes: nodes, QueueSize: 100},
			WithPollInterval(100*time.Millisecond))
		testpeer.WaitFor(t, waitLong, "five filtered level values", func() bool {
			return len(sink.readings(0, "pump1", "level")) >= 5
		})
		rs := sink.readings(0, "pump1", "level")
		for i := 1; i < len(rs); i++ {
			prev, cur := rs[i-1].Value.(float64), rs[i].Value.(float64)
			if d := cur - prev; d < 5 && d > -5 {
				t.Errorf("level %v followed by %v: change below the deadband of 5", prev, cur)
			}
		}
		if raw := len(sink.readings(0, "pump1", "raw")); raw <= len(rs) {
			t.Errorf("unfiltered item reported %d values, filtered %d: the filter had no effect", raw, len(rs))
		}
	})

	t.Run("frozen server", func(t *testing.T) {
		sink, _ := runEngine(t, Config{Endpoint: srv.Endpoint, Security: insecure, Nodes: knownNodes()})
		checkKnown(t, sink, 0)
		srv.Freeze()
		thawed := false
		defer func() {
			if !thawed {
				srv.Thaw()
			}
		}()
		from := sink.count()
		// Silent past the keep-alive: the engine notices, reports the
		// tags bad and starts over.
		testpeer.WaitFor(t, waitLong, "tags reported bad after the server froze", func() bool {
			rs := sink.readings(from, "boiler1", "temperature")
			return len(rs) > 0 && rs[len(rs)-1].Quality == reading.Bad
		})
		if st := sink.deviceStatus("boiler1"); !strings.HasPrefix(st, "error: ") {
			t.Errorf("status of boiler1 while frozen = %q, want error: ...", st)
		}
		srv.Thaw()
		thawed = true
		checkKnown(t, sink, sink.count())
	})
}

// TestServerRestart kills the server mid-run and starts it again on the same
// port: readings resume without restarting the collector.
func TestServerRestart(t *testing.T) {
	srv := testpeer.OPCUA(t, testpeer.OPCUAConfig{})
	sink, _ := runEngine(t, Config{Endpoint: srv.Endpoint, Security: insecure, Nodes: knownNodes()})
	checkKnown(t, sink, 0)

	srv.Stop()
	from := sink.count()
	testpeer.WaitFor(t, waitLong, "tags reported bad while the server is down", func() bool {
		rs := sink.readings(from, "pump1", "level")
		return len(rs) > 0 && rs[len(rs)-1].Quality == reading.Bad
	})
	srv.Start()
	up := time.Now()
	from = sink.count()
	checkKnown(t, sink, from)
	t.Logf("readings resumed %v after the server was back", time.Since(up).Round(time.Millisecond))
}

// TestSecure uses a server that only offers Basic256Sha256/SignAndEncrypt
// with user name authentication.
func TestSecure(t *testing.T) {
	srv := testpeer.OPCUA(t, testpeer.OPCUAConfig{Secure: true, User: "op", Password: "s3cret"})
	pwFile := func(pw string) string {
		p := filepath.Join(t.TempDir(), "pw")
		if err := os.WriteFile(p, []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	trusted := func() string {
		dir := t.TempDir()
		b, err := os.ReadFile(srv.CertFile)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "server.pem"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return dir
	}

	t.Run("username and password", func(t *testing.T) {
		sink, _ := runEngine(t, Config{
			Endpoint: srv.Endpoint,
			Security: &Security{Policy: PolicyBasic256Sha256, Mode: SecModeSignAndEncrypt},
			TrustDir: trusted(),
			Auth:     &Auth{Username: "op", PasswordFile: pwFile("s3cret")},
			Nodes:    knownNodes(),
		})
		checkKnown(t, sink, 0)
	})

	t.Run("default security picks SignAndEncrypt", func(t *testing.T) {
		sink, _ := runEngine(t, Config{
			Endpoint: srv.Endpoint,
			TrustDir: trusted(),
			Auth:     &Auth{Username: "op", PasswordFile: pwFile("s3cret")},
			Nodes:    knownNodes()[:1],
		})
		testpeer.WaitFor(t, waitLong, "a good temperature", func() bool {
			_, ok := sink.lastGood(0, "boiler1", "temperature")
			return ok
		})
	})

	t.Run("user certificate", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := ownCertificate(nil, dir, "urn:fieldgate:test-user"); err != nil {
			t.Fatal(err)
		}
		sink, _ := runEngine(t, Config{
			Endpoint: srv.Endpoint,
			Security: &Security{Policy: PolicyBasic256Sha256, Mode: SecModeSignAndEncrypt},
			TrustDir: trusted(),
			Auth:     &Auth{CertFile: filepath.Join(dir, "cert.der"), KeyFile: filepath.Join(dir, "private", "key.pem")},
			Nodes:    knownNodes()[:1],
		})
		testpeer.WaitFor(t, waitLong, "a good temperature with an X.509 user token", func() bool {
			_, ok := sink.lastGood(0, "boiler1", "temperature")
			return ok
		})
	})

	t.Run("wrong password", func(t *testing.T) {
		sink, _ := runEngine(t, Config{
			Endpoint: srv.Endpoint,
			Security: &Security{Policy: PolicyBasic256Sha256, Mode: SecModeSignAndEncrypt},
			TrustDir: trusted(),
			Auth:     &Auth{Username: "op", PasswordFile: pwFile("wrong")},
			Nodes:    knownNodes(),
		})
		// Several attempts, each reported, none crashing the engine.
		testpeer.WaitFor(t, waitLong, "three failed attempts reported", func() bool {
			return len(sink.readings(0, "boiler1", "temperature")) >= 3
		})
		for _, r := range sink.readings(0, "boiler1", "temperature") {
			if r.Quality != reading.Bad || !strings.Contains(r.Error, "BadUserAccessDenied") && !strings.Contains(r.Error, "BadIdentityTokenRejected") {
				t.Errorf("reading with a wrong password = %+v, want bad with the status name", r)
			}
		}
		st := sink.deviceStatus("boiler1")
		if !strings.HasPrefix(st, "error: ") || !strings.Contains(st, "Bad") {
			t.Errorf("status = %q, want error: naming the OPC UA status", st)
		}
		t.Logf("status with a wrong password: %s", st)
	})

	t.Run("untrusted server certificate", func(t *testing.T) {
		trustDir := t.TempDir()
		sink, dataDir := runEngine(t, Config{
			Endpoint: srv.Endpoint,
			Security: &Security{Policy: PolicyBasic256Sha256, Mode: SecModeSignAndEncrypt},
			TrustDir: trustDir,
			Auth:     &Auth{Username: "op", PasswordFile: pwFile("s3cret")},
			Nodes:    knownNodes(),
		})
		testpeer.WaitFor(t, waitLong, "an untrusted certificate error", func() bool {
			return strings.Contains(sink.deviceStatus("boiler1"), "untrusted server certificate")
		})
		st := sink.deviceStatus("boiler1")
		t.Logf("status: %s", st)
		if !strings.Contains(st, trustDir) || !strings.Contains(st, "thumbprint") {
			t.Errorf("status %q does not name the thumbprint and the trust directory %s", st, trustDir)
		}
		rejected, _ := filepath.Glob(filepath.Join(dataDir, "pki", "rejected", "*.der"))
		if len(rejected) != 1 {
			t.Fatalf("rejected certificates: %v, want one", rejected)
		}
		// Doing what the message says makes the collector connect, without
		// a restart.
		if err := os.Rename(rejected[0], filepath.Join(trustDir, filepath.Base(rejected[0]))); err != nil {
			t.Fatal(err)
		}
		checkKnown(t, sink, sink.count())
	})
}

// TestManyItems subscribes to 5,000 variables; the server allows 500 items
// per CreateMonitoredItems call.
func TestManyItems(t *testing.T) {
	const n = 5000
	srv := testpeer.OPCUA(t, testpeer.OPCUAConfig{Bulk: n, MaxItemsPerCall: 500})
	var nodes []Node
	for i := 0; i < n; i++ {
		nodes = append(nodes, Node{Device: fmt.Sprintf("dev%d", i%10), Name: fmt.Sprintf("v%d", i), NodeID: fmt.Sprintf("ns=1;s=Bulk.%d", i)})
	}
	sink, _ := runEngine(t, Config{Endpoint: srv.Endpoint, Security: insecure, Nodes: nodes},
		WithPollInterval(time.Second))
	seen := func() (good int, changed int) {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		first := map[string]any{}
		moved := map[string]bool{}
		for _, b := range sink.batches {
			for _, r := range b.Readings {
				if r.Quality != reading.Good {
					continue
				}
				k := b.Device + "/" + r.Tag
				if v, ok := first[k]; !ok {
					first[k] = r.Value
				} else if v != r.Value {
					moved[k] = true
				}
			}
		}
		return len(first), len(moved)
	}
	testpeer.WaitFor(t, 3*waitLong, "all 5000 items delivering changing values", func() bool {
		good, changed := seen()
		return good == n && changed == n
	})
	for d := 0; d < 10; d++ {
		if st := sink.deviceStatus(fmt.Sprintf("dev%d", d)); st != "ok" {
			t.Errorf("status of dev%d = %q", d, st)
		}
	}
}
