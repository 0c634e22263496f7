package publish

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fieldgate/collectors/reading"
	"fieldgate/internal/testpeer"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type payload struct {
	Gateway   string `json:"gateway"`
	Collector string `json:"collector"`
	Device    string `json:"device"`
	Seq       uint64 `json:"seq"`
	TS        int64  `json:"ts"`
	Readings  []struct {
		Tag     string `json:"tag"`
		Value   any    `json:"value"`
		Unit    string `json:"unit"`
		Quality string `json:"quality"`
		TS      int64  `json:"ts"`
	} `json:"readings"`
}

// start runs a publisher until the test ends.
func start(t *testing.T, cfg Config) *Publisher {
	t.Helper()
	p, _ := runFor(t, cfg)
	return p
}

func batch(device string, v float64) reading.Batch {
	ts := time.Now()
	return reading.Batch{Device: device, TS: ts, Readings: []reading.Reading{{Tag: "voltage", Value: v, Unit: "V", Quality: reading.Good, TS: ts}}}
}

func recv(t *testing.T, ch <-chan testpeer.Message, n int) []testpeer.Message {
	t.Helper()
	var got []testpeer.Message
	timeout := time.After(30 * time.Second)
	for len(got) < n {
		select {
		case m := <-ch:
			got = append(got, m)
		case <-timeout:
			t.Fatalf("received %d of %d messages", len(got), n)
		}
	}
	return got
}

func TestPublishContract(t *testing.T) {
	broker := testpeer.Mosquitto(t)
	data := testpeer.Subscribe(t, broker, "fieldgate/gw1/data/#")
	status := testpeer.Subscribe(t, broker, "fieldgate/gw1/status/#")
	dir := t.TempDir()
	p := start(t, Config{Broker: broker, GatewayID: "gw1", CollectorName: "modbus-line3", DataDir: dir, Version: "test"})
	p.SetDeviceStatus("meter1", "ok")
	for i := 0; i < 3; i++ {
		if err := p.Publish(context.Background(), batch("meter1", 230+float64(i))); err != nil {
			t.Fatal(err)
		}
	}
	for i, m := range recv(t, data, 3) {
		if m.Topic != "fieldgate/gw1/data/modbus-line3/meter1" {
			t.Errorf("topic %q", m.Topic)
		}
		var pl payload
		if err := json.Unmarshal(m.Payload, &pl); err != nil {
			t.Fatal(err)
		}
		if pl.Gateway != "gw1" || pl.Collector != "modbus-line3" || pl.Device != "meter1" || pl.Seq != uint64(i+1) ||
			len(pl.Readings) != 1 || pl.Readings[0].Value != 230+float64(i) || pl.Readings[0].Quality != "good" || pl.Readings[0].Unit != "V" {
			t.Errorf("payload %s", m.Payload)
		}
	}
	st := recv(t, status, 1)[0]
	var s Status
	if err := json.Unmarshal(st.Payload, &s); err != nil {
		t.Fatal(err)
	}
	if st.Topic != "fieldgate/gw1/status/modbus-line3" || s.State != "online" || s.Devices["meter1"] != "ok" || s.Version != "test" {
		t.Errorf("status %s on %s", st.Payload, st.Topic)
	}
	testpeer.WaitFor(t, 10*time.Second, "3 acknowledged", func() bool { return p.Stats().Published == 3 && p.Stats().Pending == 0 })
}

func TestSeqContinuesAcrossRestart(t *testing.T) {
	broker := testpeer.Mosquitto(t)
	data := testpeer.Subscribe(t, broker, "fieldgate/+/data/#")
	dir := t.TempDir()
	cfg := Config{Broker: broker, GatewayID: "gw1", CollectorName: "c", DataDir: dir}
	for round := 0; round < 2; round++ {
		p, err := New(cfg, discard())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()
		for i := 0; i < 2; i++ {
			if err := p.Publish(ctx, batch("d", 1)); err != nil {
				t.Fatal(err)
			}
		}
		testpeer.WaitFor(t, 10*time.Second, "acks", func() bool { return p.Stats().Published == 2 })
		cancel()
		<-done
	}
	for i, m := range recv(t, data, 4) {
		var pl payload
		_ = json.Unmarshal(m.Payload, &pl)
		if pl.Seq != uint64(i+1) {
			t.Errorf("message %d has seq %d", i, pl.Seq)
		}
	}
	// The counter file of older versions says where they would go on.
	raw, _ := os.ReadFile(filepath.Join(dir, "seq"))
	if f := strings.Fields(string(raw)); len(f) < 4 || f[0] != "4" || f[3] != "clean" {
		t.Errorf("seq file holds %q", raw)
	}
}

func TestBrokerOutageLosesNothing(t *testing.T) {
	b := testpeer.StartBroker(t)
	data := testpeer.Subscribe(t, b.Addr, "fieldgate/+/data/#")
	p := start(t, Config{Broker: b.Addr, GatewayID: "gw1", CollectorName: "c", DataDir: t.TempDir()})
	const before, during, after = 10, 50, 10
	for i := 0; i < before; i++ {
		_ = p.Publish(context.Background(), batch("d", float64(i)))
	}
	testpeer.WaitFor(t, 10*time.Second, "first acks", func() bool { return p.Stats().Published == before })
	b.Stop()
	testpeer.WaitFor(t, 10*time.Second, "publisher to see the outage", func() bool { return !p.Stats().Connected })
	for i := 0; i < during; i++ {
		_ = p.Publish(context.Background(), batch("d", float64(i)))
	}
	b.Start()
	for i := 0; i < after; i++ {
		_ = p.Publish(context.Background(), batch("d", float64(i)))
	}
	seen := map[uint64]bool{}
	deadline := time.After(60 * time.Second)
	for len(seen) < before+during+after {
		select {
		case m := <-data:
			var pl payload
			_ = json.Unmarshal(m.Payload, &pl)
			seen[pl.Seq] = true
		case <-deadline:
			t.Fatalf("got %d distinct seqs of %d", len(seen), before+during+after)
		}
	}
	for s := uint64(1); s <= before+during+after; s++ {
		if !seen[s] {
			t.Errorf("seq %d lost", s)
		}
	}
}

func TestBadCredentialsReportedAndQueued(t *testing.T) {
	broker := testpeer.Mosquitto(t, testpeer.WithPassword(map[string]string{"gw": "right"}))
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := start(t, Config{Broker: broker, Username: "gw", PasswordFile: pw, GatewayID: "gw1", CollectorName: "c", DataDir: dir})
	_ = p.Publish(context.Background(), batch("d", 1))
	testpeer.WaitFor(t, 10*time.Second, "auth error", func() bool {
		return strings.Contains(strings.ToLower(p.Stats().LastError), "not authorized")
	})
	if st := p.Stats(); st.Pending != 1 || st.Connected {
		t.Errorf("stats %+v", st)
	}
	// The status file tells the supervisor what the broker cannot be told.
	var fs FileStatus
	testpeer.WaitFor(t, 10*time.Second, "status file with the auth error", func() bool {
		raw, err := os.ReadFile(filepath.Join(dir, StatusFile))
		if err != nil || json.Unmarshal(raw, &fs) != nil {
			return false
		}
		return strings.Contains(strings.ToLower(fs.MQTT.LastError), "not authorized")
	})
	if fs.MQTT.Connected || fs.Queue == nil || fs.Queue.Pending != 1 || fs.State != "online" {
		t.Errorf("status file %+v", fs)
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"bad broker", Config{Broker: "http://x", GatewayID: "g", CollectorName: "c", DataDir: t.TempDir()}, `unknown scheme "http"`},
		{"no data dir", Config{Broker: "x", GatewayID: "g", CollectorName: "c"}, "data dir is required"},
		{"missing password file", Config{Broker: "x", GatewayID: "g", CollectorName: "c", DataDir: t.TempDir(), PasswordFile: "/nonexistent/pw"}, `password file "/nonexistent/pw"`},
		{"bad CA", Config{Broker: "ssl://x", GatewayID: "g", CollectorName: "c", DataDir: t.TempDir(), CAFile: "/nonexistent/ca.pem"}, `CA file "/nonexistent/ca.pem"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, discard())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New error = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestCorruptSeqFile: an unreadable seq counter of an older version does not
// stop the collector; numbering jumps past anything it could have handed
// out, and the status says so.
func TestCorruptSeqFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "seq"), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{Broker: "x", GatewayID: "g", CollectorName: "c", DataDir: dir}, discard())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer p.close()
	st := p.status(StateOnline, time.Now(), nil)
	if st.Resumed == nil || !strings.Contains(st.Resumed.Reason, "unreadable") || st.Resumed.NextSeq <= 10_000 {
		t.Errorf("status %+v, resumed %+v: want a resume past 10000 naming the unreadable counter", st, st.Resumed)
	}
}

// TestQueuedAcrossRestartWhileBrokerDown: batches published while the broker
// is unreachable survive a collector restart and arrive, marked replayed.
func TestQueuedAcrossRestartWhileBrokerDown(t *testing.T) {
	port := testpeer.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	dir := t.TempDir()
	cfg := Config{Broker: addr, GatewayID: "gw1", CollectorName: "c", DataDir: dir, Interval: 100 * time.Millisecond}
	p, err := New(cfg, discard())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	old := time.Now().Add(-time.Minute)
	for i := 0; i < 5; i++ {
		b := batch("d", float64(i))
		b.TS = old
		if err := p.Publish(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	<-done
	b := testpeer.StartBroker(t, testpeer.WithPort(port))
	data := testpeer.Subscribe(t, b.Addr, "fieldgate/+/data/#")
	start(t, cfg)
	for i, m := range recv(t, data, 5) {
		var pl struct {
			Seq      uint64 `json:"seq"`
			Replayed bool   `json:"replayed"`
		}
		if err := json.Unmarshal(m.Payload, &pl); err != nil {
			t.Fatal(err)
		}
		if pl.Seq != uint64(i+1) || !pl.Replayed {
			t.Errorf("message %d: %s", i, m.Payload)
		}
	}
}

func TestMarkReplayed(t *testing.T) {
	got := string(markReplayed([]byte(`{"gateway":"g","seq":1}`)))
	if got != `{"replayed":true,"gateway":"g","seq":1}` {
		t.Errorf("markReplayed = %s", got)
	}
}

// TestPrivateDataDir (issue 9 item 3): everything the publisher writes in
// DATA_DIR is 0600 and every directory 0700, also where an older version
// left them open.
func TestPrivateDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	os.MkdirAll(filepath.Join(dir, "queue"), 0o755)
	os.WriteFile(filepath.Join(dir, StatusFile), []byte("{}\n"), 0o644)
	p, err := New(Config{Broker: "x", GatewayID: "g", CollectorName: "c", DataDir: dir}, discard())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := p.Publish(context.Background(), batch("d", 1)); err != nil {
			t.Fatal(err)
		}
	}
	p.writeStatusFile(StateOnline)
	p.close()
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("%s is %v, want 0700", dir, fi.Mode().Perm())
	}
	if n := testpeer.CheckPrivate(t, dir); n < 7 {
		t.Fatalf("only %d entries in the data dir", n)
	}
}
