package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"fieldgate/gateway/serialports"
	"fieldgate/internal/testpeer"
)

// TestDevicesPty runs `fieldgate devices` on this machine with a gateway.yaml
// whose RS-485 line is a socat pty reached through a symlink, as in the demo:
// the pty is listed with the collector that owns it, and an unplugged
// adapter is listed as missing.
func TestDevicesPty(t *testing.T) {
	dir := t.TempDir()
	_, line, _ := testpeer.PtyLinks(t, dir)
	pts, err := filepath.EvalSymlinks(line)
	if err != nil {
		t.Fatal(err)
	}
	gone := "/dev/serial/by-id/usb-fieldgate-test-unplugged-if00-port0"
	cfg := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(cfg, []byte(`version: 1
gateway: {id: gw1, data_dir: `+dir+`}
mqtt: {broker: tcp://127.0.0.1:1883}
collectors:
  - name: modbus-line3
    image: fieldgate/collector-modbus:latest
    devices: ["`+line+`:/dev/ttyUSB0"]
    modbus:
      transport: rtu
      serial: {port: /dev/ttyUSB0, baud: 19200}
      devices: [{name: meter1, unit_id: 1, profile: eastron-sdm120}]
  - name: modbus-spare
    image: fieldgate/collector-modbus:latest
    privileged: true
    modbus:
      transport: rtu
      serial: {port: `+gone+`, baud: 9600}
      devices: [{name: meter1, unit_id: 1, profile: eastron-sdm120}]
`), 0o644); err != nil {
		t.Fatal(err)
	}

	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"devices", "--config", cfg}, &out, &errOut); err != nil {
		t.Fatalf("devices: %v\n%s", err, errOut.String())
	}
	text := out.String()
	for _, want := range []string{
		pts + "  owner: modbus-line3",
		"  config   " + line + " (modbus-line3 devices)",
		gone + "  MISSING: no such device on this machine · owner: modbus-spare",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}

	out.Reset()
	if err := run(context.Background(), []string{"devices", "--config", cfg, "--json"}, &out, &errOut); err != nil {
		t.Fatalf("devices --json: %v", err)
	}
	var ports []serialports.Port
	if err := json.Unmarshal(out.Bytes(), &ports); err != nil {
		t.Fatalf("devices --json: %v\n%s", err, out.String())
	}
	found := false
	for _, p := range ports {
		if p.Path == pts {
			found = len(p.Claims) == 2 && p.Owners()[0] == "modbus-line3"
		}
	}
	if !found {
		t.Errorf("--json: %s not owned by modbus-line3 through two claims:\n%s", pts, out.String())
	}
}

// TestDevicesNone checks the message of a machine without serial ports.
func TestDevicesNone(t *testing.T) {
	var out bytes.Buffer
	empty := serialports.Lister{SysDir: t.TempDir(), DevDir: t.TempDir()}
	if err := listDevices(empty, filepath.Join(t.TempDir(), "absent.yaml"), false, false, &out, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "no serial ports") {
		t.Errorf("output = %q", out.String())
	}
	out.Reset()
	if err := listDevices(empty, filepath.Join(t.TempDir(), "absent.yaml"), false, true, &out, &out); err != nil || strings.TrimSpace(out.String()) != "[]" {
		t.Errorf("--json on no ports = %q, %v; want []", out.String(), err)
	}
	// An explicit config that does not exist is an error.
	if err := listDevices(empty, filepath.Join(t.TempDir(), "absent.yaml"), true, false, &out, &out); err == nil {
		t.Error("missing --config accepted")
	}
}
