package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fieldgate/gateway/httpapi"
	"fieldgate/gateway/supervisor"
)

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte(`version: 1
gateway: {id: gw1}
mqtt: {broker: broker.local}
collectors:
  - name: plc
    image: fieldgate/collector-modbus:latest
    modbus:
      transport: tcp
      tcp: {address: "10.0.0.7:502"}
      devices: [{name: d, tags: [{name: t, table: coil, address: 0}]}]
`), 0o644)
	os.WriteFile(bad, []byte(`version: 1
gateway: {id: gw1, lisen: x}
mqtt: {broker: broker.local}
collectors:
  - name: plc
    image: fieldgate/collector-modbus:latest
    restart: sometimes
    modbus:
      transport: tcp
      tcp: {address: "10.0.0.7:502"}
      devices: [{name: d, tags: [{name: t, table: coil, address: 0}]}]
`), 0o644)
	tests := []struct {
		args []string
		code int
		out  []string
	}{
		{[]string{"validate", "--config", good}, 0, []string{good + ": ok"}},
		{[]string{"validate", "--config", bad}, 1, []string{
			bad + `:2: gateway: unknown key "lisen"`,
			bad + `:7: collector "plc": unknown restart policy "sometimes"`}},
		{[]string{"validate", "--config", filepath.Join(dir, "missing.yaml")}, 1, nil},
		{[]string{"validate", "--bogus"}, 2, nil},
		{[]string{"frobnicate"}, 2, nil},
		{nil, 2, nil},
		// An invalid config at start exits 2, before touching any runtime.
		{[]string{"run", "--config", bad}, 2, nil},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), tt.args, &stdout, &stderr)
		if got := exitCode(err); got != tt.code {
			t.Errorf("%v: exit %d, want %d (err %v, stderr %s)", tt.args, got, tt.code, err, stderr.String())
		}
		for _, want := range tt.out {
			if !strings.Contains(stdout.String(), want) {
				t.Errorf("%v: stdout lacks %q:\n%s", tt.args, want, stdout.String())
			}
		}
	}
}

type staticStatus struct{ st supervisor.Status }

func (s staticStatus) Status() supervisor.Status { return s.st }

func TestStatusTable(t *testing.T) {
	at := time.Now().Add(-90 * time.Second)
	srv := httptest.NewServer(httpapi.Handler(staticStatus{supervisor.Status{
		GatewayID: "gw1", Version: "v1", LastReloadError: "gw.yaml:3: bad",
		Collectors: []supervisor.CollectorStatus{
			{Name: "modbus-line3", Image: "fieldgate/collector-modbus:latest", ImageDigest: "sha256:0123456789abcdef",
				State: "running", Pid: 4242, Restarts: 2, StartedAt: &at, LastExit: &supervisor.Exit{Code: 137, At: at},
				Report: []byte(`{"mqtt":{"connected":false,"last_error":"not Authorized"},"queue":{"pending":17,"dropped":3}}`)},
			{Name: "opcua-boiler", State: "crashloop", LastError: "image not found"},
		}}}, ""))
	defer srv.Close()
	var stdout, stderr bytes.Buffer
	addr := strings.TrimPrefix(srv.URL, "http://")
	if err := run(context.Background(), []string{"status", "--addr", addr}, &stdout, &stderr); err != nil {
		t.Fatalf("status: %v %s", err, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{"gateway gw1", "gw.yaml:3: bad", "NAME", "modbus-line3", "running", "4242", "137", "0123456789ab", "opcua-boiler", "crashloop", "image not found",
		"error: not Authorized", "17 (3 lost)"} {
		if !strings.Contains(out, want) {
			t.Errorf("status table lacks %q:\n%s", want, out)
		}
	}
	// Nothing listening: a clear error.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	free := ln.Addr().String()
	ln.Close()
	if err := run(context.Background(), []string{"status", "--addr", free}, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), "is fieldgate running") {
		t.Errorf("status against nothing: %v", err)
	}
}

func TestSdNotify(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	if err := sdNotify("READY=1"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Fatalf("got %q, %v", buf[:n], err)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if err := sdNotify("READY=1"); err != nil {
		t.Errorf("no socket: %v", err)
	}
}
