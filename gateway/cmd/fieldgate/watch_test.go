package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"fieldgate/internal/testpeer"
)

// TestWatchSnapshot runs `fieldgate watch` with output that is not a
// terminal against a real mosquitto: it prints one plain snapshot of what it
// received, reading broker, prefix and gateway id from gateway.yaml.
func TestWatchSnapshot(t *testing.T) {
	testpeer.Require(t, "mosquitto")
	broker := testpeer.Mosquitto(t)
	host, port, _ := strings.Cut(broker, ":")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(cfg, []byte(`version: 1
gateway: {id: gw7, data_dir: `+dir+`}
mqtt: {broker: "tcp://`+broker+`", topic_prefix: plant/a}
collectors:
  - name: plc
    image: fieldgate/collector-modbus:latest
    poll_interval: 1s
    devices: [/dev/serial/by-id/usb-not-plugged-in]
    modbus:
      transport: tcp
      tcp: {address: "127.0.0.1:502"}
      devices: [{name: d, tags: [{name: t, table: coil, address: 0}]}]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	pub := func(retain bool, topic, payload string) {
		args := []string{"-h", host, "-p", port, "-q", "1", "-t", topic, "-m", payload}
		if retain {
			args = append(args, "-r")
		}
		if out, err := exec.Command("mosquitto_pub", args...).CombinedOutput(); err != nil {
			t.Errorf("mosquitto_pub: %v\n%s", err, out)
		}
	}
	pub(true, "plant/a/gw7/status/plc", `{"state":"online","ts":1,"version":"t","devices":{"d":"ok"},"queue":{"pending":2,"bytes":10,"dropped":0,"rejected":0}}`)

	ctx, cancel := context.WithCancel(context.Background())
	published := make(chan struct{})
	// No pub (nor its Errorf) after the test ends.
	defer func() { cancel(); <-published }()
	go func() { // data keeps coming while the view listens
		defer close(published)
		for ctx.Err() == nil {
			now := time.Now().UnixMilli()
			pub(false, "plant/a/gw7/data/plc/d", fmt.Sprintf(`{"gateway":"gw7","collector":"plc","device":"d","seq":1,"ts":%d,"readings":[{"tag":"t","value":true,"quality":"good","ts":%d},{"tag":"u","value":null,"quality":"bad","error":"modbus exception 2: illegal data address","ts":%d}]}`, now, now, now))
			time.Sleep(200 * time.Millisecond)
		}
	}()

	var out, errOut bytes.Buffer
	if err := run(ctx, []string{"watch", "--config", cfg, "--once", "3s"}, &out, &errOut); err != nil {
		t.Fatalf("watch: %v\n%s", err, errOut.String())
	}
	text := out.String()
	for _, re := range []string{
		`gateway gw7 · broker tcp://` + regexp.QuoteMeta(broker) + ` connected`,
		`(?m)^plc\s+-\s+-\s+2\s+online\s+1/1 ok$`,
		`(?m)^plc\s+d\s+t\s+true\s+good\s+\S+s$`,
		`(?m)^plc\s+d\s+u\s+—\s+bad\s+\S+s\s+modbus exception 2: illegal data address$`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("snapshot does not match %s:\n%s", re, text)
		}
	}
	if strings.Contains(text, "\x1b[") {
		t.Errorf("snapshot holds escape codes:\n%q", text)
	}
}

func TestWatchErrors(t *testing.T) {
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"watch", "--config", filepath.Join(dir, "absent.yaml")}, &out, &errOut)
	if code := exitCode(err); code != 1 {
		t.Errorf("explicit missing --config: exit %d (%v), want 1", code, err)
	}
	// No config at the default path and no --broker: a usage error.
	t.Setenv("HOME", dir)
	if _, err := os.Stat(defaultConfigPath); err != nil {
		err := run(context.Background(), []string{"watch"}, &out, &errOut)
		if code := exitCode(err); code != 2 || !strings.Contains(err.Error(), "--broker") {
			t.Errorf("no broker: exit %d (%v), want 2 naming --broker", code, err)
		}
	}
	err = run(context.Background(), []string{"watch", "--broker", "bogus://x"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("bad --broker: %v, want an error naming it", err)
	}
	// A broker that does not answer: the snapshot says so and fails.
	l := testpeer.FreePort(t)
	err = run(context.Background(), []string{"watch", "--broker", fmt.Sprintf("tcp://127.0.0.1:%d", l), "--once", "1500ms"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "not reached") {
		t.Errorf("unreachable broker: %v, want \"not reached\"", err)
	}
}
