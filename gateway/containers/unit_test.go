package containers

import (
	"os"
	"strings"
	"testing"
	"time"

	"fieldgate/gateway/config"
	"fieldgate/gateway/supervisor"
)

func TestProcStartTime(t *testing.T) {
	// The fixture's starttime is 12345 ticks after a boot at 1700000000, and
	// its command name holds spaces and parentheses.
	got, err := procStartTime("testdata/proc", 42)
	if want := time.Unix(1700000000, 0).Add(123450 * time.Millisecond); err != nil || !got.Equal(want) {
		t.Errorf("procStartTime(fixture) = %v, %v; want %v", got, err, want)
	}
	// This process started moments ago (the test binary's start).
	self, err := ProcStartTime(uint32(os.Getpid()))
	if d := time.Since(self); err != nil || d < 0 || d > 10*time.Minute {
		t.Errorf("ProcStartTime(self) = %v (%v ago), %v", self, d, err)
	}
	// Every failure is an error naming what could not be read; no fallback.
	for _, tt := range []struct {
		proc string
		pid  uint32
		want string
	}{
		{"testdata/proc", 7, "testdata/proc/7/stat: no such file"},
		{"testdata/badproc", 42, "testdata/badproc/42/stat: 3 fields after the command name, want at least 20"},
		{"/proc", 0, "/proc/0/stat"},
	} {
		got, err := procStartTime(tt.proc, tt.pid)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !got.IsZero() {
			t.Errorf("procStartTime(%s, %d) = %v, %v; want an error with %q", tt.proc, tt.pid, got, err, tt.want)
		}
	}
}

func TestRuntimeSpec(t *testing.T) {
	cfg := &config.Config{
		Gateway: config.Gateway{ID: "gw1", DataDir: "/var/lib/fieldgate"},
		MQTT:    config.MQTT{Broker: "tcp://b:1883", TopicPrefix: "fieldgate", PasswordFile: "/etc/fieldgate/mqtt.pass"},
	}
	col := config.Collector{Name: "m1", Image: "fieldgate/collector-modbus:latest", Privileged: true,
		Devices:   []string{"/dev/serial/by-path/pci-0000:00:14.0-usb-0:1:1.0-port0:/dev/ttyUSB0"},
		Resources: config.Resources{CPUs: 0.5, MemoryBytes: 64 << 20}, ProtocolConfig: []byte("transport: tcp\n")}
	rs := RuntimeSpec(supervisor.BuildSpec(cfg, &col))
	if rs.ID != "m1" || !rs.Privileged || rs.CPUs != 0.5 || rs.MemoryBytes != 64<<20 ||
		rs.LogPath != "/var/lib/fieldgate/logs/m1/collector.log" {
		t.Errorf("spec = %+v", rs)
	}
	if len(rs.Devices) != 1 || rs.Devices[0].Host != "/dev/serial/by-path/pci-0000:00:14.0-usb-0:1:1.0-port0" || rs.Devices[0].Container != "/dev/ttyUSB0" {
		t.Errorf("devices = %+v", rs.Devices)
	}
	mounts := map[string]string{}
	for _, m := range rs.Mounts {
		mounts[m.Container] = m.Host
		if m.Container == supervisor.ContainerDataDir && m.ReadOnly || m.Container != supervisor.ContainerDataDir && !m.ReadOnly {
			t.Errorf("mount %+v: only the data dir is writable", m)
		}
	}
	for ctr, host := range map[string]string{
		"/etc/fieldgate/collector.yaml": "/var/lib/fieldgate/config/m1.yaml",
		"/var/lib/fieldgate":            "/var/lib/fieldgate/collectors/m1",
		"/etc/fieldgate/mqtt/password":  "/etc/fieldgate/mqtt.pass",
	} {
		if mounts[ctr] != host {
			t.Errorf("mount at %s = %q, want %q", ctr, mounts[ctr], host)
		}
	}
	if rs.Labels[supervisor.LabelManaged] != "true" || len(rs.Labels[supervisor.LabelSpecHash]) != 64 {
		t.Errorf("labels = %v", rs.Labels)
	}
	env := map[string]bool{}
	for _, kv := range rs.Env {
		env[kv] = true
	}
	for _, want := range []string{"MQTT_PASSWORD_FILE=/etc/fieldgate/mqtt/password", "COLLECTOR_NAME=m1", "GATEWAY_ID=gw1", "MQTT_BROKER=tcp://b:1883"} {
		if !env[want] {
			t.Errorf("env lacks %s: %v", want, rs.Env)
		}
	}
}
