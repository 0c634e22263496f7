package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"fieldgate/internal/fieldgatetest"
	"fieldgate/internal/testpeer"
)

// TestCanaryPasswords runs the real OPC UA collector under the supervisor on
// the private containerd, with mosquitto requiring a password and node-opcua
// requiring a user, every password a random canary in a host file outside
// the data dir. One collector has the right OPC UA password, one a wrong one
// (so error paths run too). Once data flows, no canary may appear in
// /status, /metrics, the supervisor's output, `fieldgate logs`, any file
// under the data dir (status.json, collector.yaml, logs, queue) or any MQTT
// message. (The runtime's private copies of the secret files for the
// collectors' users, {data_dir}/private, are the secrets themselves.)
func TestCanaryPasswords(t *testing.T) {
	testpeer.Require(t, "containerd", "mosquitto", "node")
	canary := func(kind string) string {
		b := make([]byte, 8)
		rand.Read(b)
		return "canary-" + kind + "-" + hex.EncodeToString(b)
	}
	mqttPW, uaPW, wrongPW := canary("mqtt"), canary("opcua"), canary("wrong")
	e := newE2E(t, testpeer.WithPassword(map[string]string{"gw": mqttPW, "sub": "subpw"}))
	e.DrainNotify()
	e.AddImage("fieldgate/collector-opcua", "real", fieldgatetest.Collector(t, "opcua-collector", ""))
	ua := testpeer.OPCUA(t, testpeer.OPCUAConfig{Secure: true, User: "op", Password: uaPW})

	// Secrets on the host, outside the data dir, as an operator keeps them.
	secrets := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(secrets, name)
		if err := os.WriteFile(p, []byte(content+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// The trust directory holds public certificates: readable by the
	// collector's own user.
	trusted := filepath.Join(secrets, "trusted")
	if err := os.Mkdir(trusted, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(secrets, 0o755); err != nil {
		t.Fatal(err)
	}
	cert, err := os.ReadFile(ua.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(trusted, "server.pem"), cert, 0o644); err != nil {
		t.Fatal(err)
	}
	collector := func(name, pwFile string) string {
		return fmt.Sprintf(`  - name: %s
    image: fieldgate/collector-opcua:real
    poll_interval: 500ms
    opcua:
      endpoint: %q
      security: {policy: Basic256Sha256, mode: SignAndEncrypt}
      trust_dir: %q
      auth: {username: op, password_file: %q}
      nodes:
        - {device: boiler1, name: temperature, node_id: "ns=1;s=Boiler1.Temperature", unit: degC}
`, name, ua.Endpoint, trusted, pwFile)
	}
	e.WriteRaw(e.Header(fmt.Sprintf(", username: gw, password_file: %q", write("mqtt.pass", mqttPW))) +
		collector("opcua-boiler", write("op.pass", uaPW)) + collector("opcua-wrong", write("wrong.pass", wrongPW)))

	var mu sync.Mutex
	var messages []string
	all := testpeer.SubscribeAs(t, e.Broker, "#", "sub", "subpw")
	good := make(chan struct{})
	var once sync.Once
	go func() {
		for m := range all {
			mu.Lock()
			messages = append(messages, m.Topic+" "+string(m.Payload))
			mu.Unlock()
			if strings.Contains(m.Topic, "/data/opcua-boiler/") && strings.Contains(string(m.Payload), `"quality":"good"`) {
				once.Do(func() { close(good) })
			}
		}
	}()
	e.Start()
	select {
	case <-good:
	case <-time.After(120 * time.Second):
		t.Fatalf("no good reading from opcua-boiler: are its mounted secrets readable?\n%s", e.logsOf("opcua-boiler"))
	}
	// The wrong password has been refused (and said so) at least once.
	testpeer.WaitFor(t, 60*time.Second, "opcua-wrong to report the refusal", func() bool {
		return strings.Contains(e.logsOf("opcua-wrong"), "BadUserAccessDenied") || strings.Contains(e.logsOf("opcua-wrong"), "BadIdentityTokenRejected")
	})
	// Let status.json and the retained statuses be rewritten once more.
	time.Sleep(2 * time.Second)

	places := map[string]string{}
	get := func(path string) string {
		resp, err := http.Get("http://" + e.Addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	places["GET /status"] = get("/status")
	places["GET /metrics"] = get("/metrics")
	places["fieldgate logs opcua-boiler"] = e.logsOf("opcua-boiler")
	places["fieldgate logs opcua-wrong"] = e.logsOf("opcua-wrong")
	places["fieldgate output"] = e.Logs()
	mu.Lock()
	places["MQTT messages"] = strings.Join(messages, "\n")
	mu.Unlock()
	private := filepath.Join(e.Dir, "private")
	err = filepath.WalkDir(e.Dir, func(path string, d fs.DirEntry, err error) error {
		if path == private {
			// Root's 0400 copies of the secret files for the collectors'
			// own users: the secrets themselves, by design.
			return filepath.SkipDir
		}
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err == nil {
			places[path] = string(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Collectors []struct {
			Name   string
			Report json.RawMessage `json:"collector_status"`
		}
	}
	if err := json.Unmarshal([]byte(places["GET /status"]), &st); err != nil || len(st.Collectors) != 2 {
		t.Fatalf("/status: %v\n%s", err, places["GET /status"])
	}
	for _, c := range st.Collectors {
		if len(c.Report) == 0 {
			t.Errorf("/status carries no collector_status for %s", c.Name)
		}
	}
	if !strings.Contains(places["MQTT messages"], "fieldgate/e2e-gw/status/opcua-boiler") {
		t.Errorf("no collector status seen on MQTT")
	}
	if !strings.Contains(places["fieldgate logs opcua-boiler"], "unencrypted connection") {
		t.Errorf("no warning about the MQTT password over tcp:// in the collector log")
	}
	for where, text := range places {
		for _, pw := range []string{mqttPW, uaPW, wrongPW} {
			if strings.Contains(text, pw) {
				t.Errorf("%s carries the password %s", where, pw)
			}
		}
	}
	t.Logf("checked %d places (%d MQTT messages, %d files) for 3 canaries", len(places), len(messages), len(places)-6)
}
