package runenv

import (
	"strings"
	"testing"
	"time"
)

func TestNormalizeBroker(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{in: "broker.local", want: "tcp://broker.local:1883"},
		{in: "broker.local:1884", want: "tcp://broker.local:1884"},
		{in: "10.0.0.7", want: "tcp://10.0.0.7:1883"},
		{in: "[::1]:1883", want: "tcp://[::1]:1883"},
		{in: "tcp://broker.local", want: "tcp://broker.local:1883"},
		{in: "tcp://broker.local:1883", want: "tcp://broker.local:1883"},
		{in: "ssl://broker.local", want: "ssl://broker.local:8883"},
		{in: "mqtts://broker.local:9999", want: "ssl://broker.local:9999"},
		{in: "ws://broker.local/mqtt", want: "ws://broker.local:80/mqtt"},
		{in: "wss://broker.local:8443/mqtt", want: "wss://broker.local:8443/mqtt"},
		{in: "http://broker.local", err: `unknown scheme "http"`},
		{in: "", err: "empty broker"},
		{in: "tcp://", err: "has no host"},
		// Credentials are refused without repeating them.
		{in: "tcp://gw:hunter2@broker.local:1883", err: `broker "tcp://broker.local:1883" carries credentials in its address; give the user as mqtt.username (MQTT_USERNAME) and the password in the file named by mqtt.password_file (MQTT_PASSWORD_FILE)`},
		{in: "mqtts://gw:hunter2@broker.local/x@y", err: `broker "mqtts://broker.local/x@y" carries credentials`},
		{in: "ws://:hunter2@broker.local", err: "carries credentials"},
		{in: "gw:hunter2@broker.local", err: `broker "broker.local" carries credentials`},
		{in: "tcp://gw:hunter2 with space@broker.local", err: "carries credentials"},
		{in: "tcp://gw:hunter2%zz@broker.local", err: "carries credentials"},
	}
	for _, tc := range tests {
		got, err := NormalizeBroker(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("NormalizeBroker(%q) error = %v, want %q", tc.in, err, tc.err)
			}
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Errorf("NormalizeBroker(%q) error %q repeats the password", tc.in, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("NormalizeBroker(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestLoad(t *testing.T) {
	env := map[string]string{"POLL_INTERVAL": "250ms", "MQTT_BROKER": "broker.local", "GATEWAY_ID": "line3-gw01"}
	e, err := Load(func(k string) string { return env[k] }, "modbus")
	if err != nil {
		t.Fatal(err)
	}
	if e.PollInterval != 250*time.Millisecond || e.Broker != "tcp://broker.local:1883" || e.CollectorName != "modbus" ||
		e.TopicPrefix != "fieldgate" || e.DataDir != DefaultDataDir || e.ConfigPath != DefaultConfigPath || e.GatewayID != "line3-gw01" {
		t.Errorf("Load = %+v", e)
	}
}

func TestLoadDefaults(t *testing.T) {
	e, err := Load(func(string) string { return "" }, "opcua")
	if err != nil {
		t.Fatal(err)
	}
	if e.PollInterval != DefaultPollInterval || e.Broker != DefaultBroker || e.GatewayID == "" || e.CollectorName != "opcua" {
		t.Errorf("defaults = %+v", e)
	}
}

func TestLoadErrorsNameEveryVariable(t *testing.T) {
	env := map[string]string{"POLL_INTERVAL": "5", "MQTT_BROKER": "http://x", "GATEWAY_ID": "a/b",
		"COLLECTOR_NAME": "x y", "LOG_LEVEL": "loud", "MQTT_CERT_FILE": "c.pem", "MQTT_TOPIC_PREFIX": "a/#"}
	_, err := Load(func(k string) string { return env[k] }, "modbus")
	if err == nil {
		t.Fatal("no error")
	}
	for _, name := range []string{"POLL_INTERVAL", "MQTT_BROKER", "GATEWAY_ID", "COLLECTOR_NAME", "LOG_LEVEL", "MQTT_KEY_FILE", "MQTT_TOPIC_PREFIX"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not name %s", err, name)
		}
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		err  bool
	}{
		{"268435456", 268435456, false}, {"256MiB", 256 << 20, false}, {"64Mi", 64 << 20, false},
		{"500MB", 500_000_000, false}, {"1G", 1_000_000_000, false}, {"1.5GiB", 3 << 29, false},
		{"", 0, true}, {"MiB", 0, true}, {"12 parsecs", 0, true},
	}
	for _, tc := range tests {
		got, err := ParseSize(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d (error %v)", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestQueueEnv(t *testing.T) {
	env := map[string]string{"QUEUE_MAX_BYTES": "64MiB", "QUEUE_MAX_AGE": "24h", "QUEUE_SYNC": "always", "QUEUE_POLICY": "reject_new"}
	e, err := Load(func(k string) string { return env[k] }, "modbus")
	if err != nil {
		t.Fatal(err)
	}
	if e.QueueMaxBytes != 64<<20 || e.QueueMaxAge != 24*time.Hour || e.QueueSync != -1 || e.QueuePolicy != "reject_new" {
		t.Errorf("queue env = %+v", e)
	}
	env = map[string]string{"QUEUE_SYNC": "sometimes", "QUEUE_POLICY": "drop_newest"}
	if _, err := Load(func(k string) string { return env[k] }, "modbus"); err == nil ||
		!strings.Contains(err.Error(), "QUEUE_SYNC") || !strings.Contains(err.Error(), "QUEUE_POLICY") {
		t.Errorf("error = %v", err)
	}
	e, _ = Load(func(string) string { return "" }, "modbus")
	if e.QueueSync != 0 {
		t.Errorf("default QueueSync = %v, want 0 (the queue's default)", e.QueueSync)
	}
}

func TestPlaintextPassword(t *testing.T) {
	tests := []struct {
		broker, passwordFile string
		want                 bool
	}{
		{"tcp://b:1883", "/etc/fieldgate/mqtt.pass", true},
		{"ws://b:80/mqtt", "/p", true},
		{"ssl://b:8883", "/p", false},
		{"wss://b:443/mqtt", "/p", false},
		{"tcp://b:1883", "", false},
	}
	for _, tc := range tests {
		if got := PlaintextPassword(tc.broker, tc.passwordFile); got != tc.want {
			t.Errorf("PlaintextPassword(%q, %q) = %v, want %v", tc.broker, tc.passwordFile, got, tc.want)
		}
	}
}
