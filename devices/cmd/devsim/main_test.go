package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/goburrow/modbus"

	"fieldgate/internal/testpeer"
)

// syncBuf is a bytes.Buffer safe to read while run writes to it.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var listenRe = regexp.MustCompile(`tcp listening on (\S+),`)

// startRun runs `devsim ARGS` in the background and returns its stdout and a
// stop function that cancels it and returns run's error.
func startRun(t *testing.T, args ...string) (*syncBuf, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuf{}
	errc := make(chan error, 1)
	go func() { errc <- run(ctx, args, out, io.Discard) }()
	var once sync.Once
	var err error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-errc:
			case <-time.After(10 * time.Second):
				err = errors.New("run did not return within 10s of cancel")
			}
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return out, stop
}

func TestModbusTCP(t *testing.T) {
	out, stop := startRun(t, "modbus", "--tcp", "127.0.0.1:0", "--unit", "1=eastron-sdm630", "--unit", "2=eastron-sdm120", "--silent-unit", "3")
	var addr string
	testpeer.WaitFor(t, 10*time.Second, "devsim to print its address", func() bool {
		if m := listenRe.FindStringSubmatch(out.String()); m != nil {
			addr = m[1]
			return true
		}
		return false
	})
	if want := "units 1=eastron-sdm630 2=eastron-sdm120 3=eastron-sdm630(silent)"; !strings.Contains(out.String(), want) {
		t.Errorf("output %q lacks %q", out, want)
	}
	for _, tc := range []struct {
		unit    byte
		lo, hi  float32
		wantErr bool
	}{{1, 227, 233, false}, {2, 228, 234, false}, {3, 0, 0, true}} {
		h := modbus.NewTCPClientHandler(addr)
		h.SlaveId, h.Timeout = tc.unit, 500*time.Millisecond
		b, err := modbus.NewClient(h).ReadInputRegisters(0, 2)
		h.Close()
		if tc.wantErr {
			if err == nil {
				t.Errorf("silent unit %d answered", tc.unit)
			}
			continue
		}
		if err != nil {
			t.Fatalf("unit %d: %v", tc.unit, err)
		}
		if v := math.Float32frombits(binary.BigEndian.Uint32(b)); v < tc.lo || v > tc.hi {
			t.Errorf("unit %d voltage %v outside its sim range %v..%v", tc.unit, v, tc.lo, tc.hi)
		}
	}
	if err := stop(); err != nil {
		t.Errorf("run after cancel: %v", err)
	}
}

// TestModbusAllProfiles: --all-profiles serves every embedded profile at
// the unit ids --unit leaves free, in name order.
func TestModbusAllProfiles(t *testing.T) {
	out, stop := startRun(t, "modbus", "--tcp", "127.0.0.1:0", "--unit", "2=eaton-mmx", "--all-profiles")
	testpeer.WaitFor(t, 10*time.Second, "devsim to print its units", func() bool { return listenRe.MatchString(out.String()) })
	want := "units 2=eaton-mmx 1=abb-b23 3=carlo-gavazzi-em24 4=eastron-sdm120 5=eastron-sdm630 6=eaton-mmx"
	if !strings.Contains(out.String(), want) {
		t.Errorf("output %q lacks %q", out, want)
	}
	if err := stop(); err != nil {
		t.Errorf("run after cancel: %v", err)
	}
}

func TestModbusRTUWithProfileFile(t *testing.T) {
	simEnd, clientEnd := testpeer.PtyPair(t)
	file := filepath.Join(t.TempDir(), "tiny.yaml")
	err := os.WriteFile(file, []byte(`name: tiny
vendor: test
model: t1
datasheet: none
tags:
  - {name: answer, table: holding_register, address: 10, type: uint16, sim: {kind: constant, value: 42}}
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	out, stop := startRun(t, "modbus", "--rtu", simEnd, "--baud", "38400", "--unit", "4="+file)
	testpeer.WaitFor(t, 10*time.Second, "devsim to report its rtu line", func() bool {
		return strings.Contains(out.String(), "rtu on "+simEnd+" 38400 8N1, units 4=tiny")
	})
	h := modbus.NewRTUClientHandler(clientEnd)
	h.BaudRate, h.SlaveId, h.Timeout = 38400, 4, 2*time.Second
	defer h.Close()
	b, err := modbus.NewClient(h).ReadHoldingRegisters(10, 1)
	if err != nil {
		t.Fatal(err)
	}
	if v := binary.BigEndian.Uint16(b); v != 42 {
		t.Errorf("answer = %d, want 42", v)
	}
	if err := stop(); err != nil {
		t.Errorf("run after cancel: %v", err)
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, "no subcommand"},
		{[]string{"opcu"}, `unknown subcommand "opcu" (valid: modbus, `},
		{[]string{"modbus", "--tcp", ":0"}, "no --unit given"},
		{[]string{"modbus", "--tcp", ":0", "--unit", "1=nope"}, `unknown profile "nope" (valid: abb-b23, `},
		{[]string{"modbus", "--tcp", ":0", "--unit", "0=eastron-sdm120"}, `invalid unit id "0" (valid: 1..247)`},
		{[]string{"modbus", "--tcp", ":0", "--unit", "eastron-sdm120"}, "want ID=VALUE"},
		{[]string{"modbus", "--tcp", ":0", "--unit", "1=eastron-sdm120", "--fault", "1=loud"}, `unknown fault kind "loud"`},
		{[]string{"modbus", "--tcp", ":0", "--unit", "1=eastron-sdm120", "--fault", "1=silent/0"}, `invalid fault period "0"`},
		{[]string{"modbus", "--unit", "1=eastron-sdm120"}, "no transport"},
		{[]string{"modbus", "--tcp", ":0", "--unit", "1=eastron-sdm120", "--max-registers", "200"}, "max registers 200 out of range 1..125"},
		{[]string{"modbus", "--tcp", ":0", "--unit", "1=eastron-sdm120", "--log-level", "loud"}, `invalid log level "loud"`},
		{[]string{"modbus", "--tcp", ":0", "--unit", "1=/nonexistent/p.yaml"}, "profile file"},
		{[]string{"profiles", "nope"}, `unknown profile "nope"`},
	}
	for _, tc := range tests {
		err := run(context.Background(), tc.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("devsim %q: err = %v, want it to contain %q", tc.args, err, tc.want)
		}
	}
}

func TestProfilesCommand(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"profiles"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "eastron-sdm630") || !strings.Contains(out.String(), "Modbus Protocol Implementation") {
		t.Errorf("profiles output:\n%s", out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"profiles", "eastron-sdm630"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`frequency\s+input_register\s+70 \(0x0046\)\s+float32\s+ABCD`).MatchString(out.String()) {
		t.Errorf("profile table lacks the frequency row:\n%s", out.String())
	}
}
