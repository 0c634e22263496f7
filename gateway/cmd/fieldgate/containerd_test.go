package main

import (
	"os"
	"testing"
	"time"

	"fieldgate/gateway/config"
	"fieldgate/gateway/supervisor"
)

func TestProcStartTime(t *testing.T) {
	// This process started moments ago (the test binary's start).
	got := procStartTime(uint32(os.Getpid()))
	if d := time.Since(got); d < 0 || d > 10*time.Minute {
		t.Errorf("procStartTime(self) = %v (%v ago)", got, d)
	}
	if got := procStartTime(0); time.Since(got) > time.Second {
		t.Errorf("procStartTime(0) = %v, want now", got)
	}
}

func TestRuntimeSpec(t *testing.T) {
	cfg := &config.Config{
		Gateway: config.Gateway{ID: "gw1", DataDir: "/var/lib/fieldgate"},
		MQTT:    config.MQTT{Broker: "tcp://b:1883", TopicPrefix: "fieldgate", PasswordFile: "/etc/fieldgate/mqtt.pass"},
	}
	col := config.Collector{Name: "m1", Image: "fieldgate/collector-modbus:latest", Privileged: true,
		Devices: []string{"/dev/ttyUSB1:/dev/ttyUSB0"}, Resources: config.Resources{CPUs: 0.5, MemoryBytes: 64 << 20},
		ProtocolConfig: []byte("transport: tcp\n")}
	rs := runtimeSpec(supervisor.BuildSpec(cfg, &col))
	if rs.ID != "m1" || !rs.Privileged || rs.CPUs != 0.5 || rs.MemoryBytes != 64<<20 ||
		rs.LogPath != "/var/lib/fieldgate/logs/m1/collector.log" {
		t.Errorf("spec = %+v", rs)
	}
	if len(rs.Devices) != 1 || rs.Devices[0].Host != "/dev/ttyUSB1" || rs.Devices[0].Container != "/dev/ttyUSB0" {
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
