package testpeer

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

//go:embed pymodbus_server.py
var pymodbusScript []byte

// PyModbusConfig describes a pymodbus 3.0 slave (Debian python3-pymodbus),
// the independent Modbus implementation of the interop tests.
type PyModbusConfig struct {
	// Mode is "rtu" (serial, RTU framing) or "tcp".
	Mode string
	// Port is the serial device with rtu (a pty path from PtyPair).
	Port string
	// Baud is the serial speed with rtu; default 19200.
	Baud int
	// TCPPort is the port with tcp; 0 picks a free one.
	TCPPort int
	// Units maps a unit id to its tables. Only the addresses listed exist:
	// a read touching any other address gets exception 2. Over RTU pymodbus
	// does not answer a unit id it does not have; over TCP it answers
	// exception 0x0B.
	Units map[int]PyModbusUnit
}

// PyModbusUnit is one slave's data, by 0-based protocol address.
type PyModbusUnit struct {
	Coils          map[uint16]bool
	DiscreteInputs map[uint16]bool
	Holding        map[uint16]uint16
	Input          map[uint16]uint16
}

// PyModbusServer is a running pymodbus slave.
type PyModbusServer struct {
	// Addr is "127.0.0.1:PORT" with tcp, the serial port with rtu.
	Addr string
	t    testing.TB
	conf string
	proc *Process
}

// PyModbus writes the slave script and its data into a temporary directory,
// starts it with /usr/bin/python3, waits until it serves and stops it when
// the test ends.
func PyModbus(t testing.TB, cfg PyModbusConfig) *PyModbusServer {
	t.Helper()
	Require(t, "pymodbus")
	if cfg.Mode != "rtu" && cfg.Mode != "tcp" {
		t.Fatalf("testpeer.PyModbus: mode %q (valid: rtu, tcp)", cfg.Mode)
	}
	if cfg.Baud == 0 {
		cfg.Baud = 19200
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "pymodbus_server.py")
	if err := os.WriteFile(script, pymodbusScript, 0o755); err != nil {
		t.Fatal(err)
	}
	type table map[string]int
	bits := func(m map[uint16]bool) table {
		out := table{}
		for a, v := range m {
			out[strconv.Itoa(int(a))] = map[bool]int{false: 0, true: 1}[v]
		}
		return out
	}
	regs := func(m map[uint16]uint16) table {
		out := table{}
		for a, v := range m {
			out[strconv.Itoa(int(a))] = int(v)
		}
		return out
	}
	units := map[string]map[string]table{}
	for id, u := range cfg.Units {
		units[strconv.Itoa(id)] = map[string]table{
			"co": bits(u.Coils), "di": bits(u.DiscreteInputs), "hr": regs(u.Holding), "ir": regs(u.Input),
		}
	}
	js := map[string]any{"mode": cfg.Mode, "baud": cfg.Baud, "units": units}
	if cfg.Mode == "rtu" {
		js["port"] = cfg.Port
	} else {
		js["port"] = cfg.TCPPort
	}
	data, err := json.Marshal(js)
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "slave.json")
	if err := os.WriteFile(conf, data, 0o644); err != nil {
		t.Fatal(err)
	}
	s := &PyModbusServer{t: t, conf: conf, Addr: cfg.Port}
	s.start(script)
	return s
}

var readyRe = regexp.MustCompile(`READY (rtu|tcp)(?: (\d+))?`)

func (s *PyModbusServer) start(script string) {
	s.t.Helper()
	s.proc = Start(s.t, "/usr/bin/python3", script, s.conf)
	WaitFor(s.t, 20*time.Second, "pymodbus slave to be ready", func() bool {
		out := s.proc.Log.String()
		if strings.Contains(out, "Traceback") || strings.Contains(out, "ERROR") {
			s.t.Fatalf("pymodbus slave failed:\n%s", out)
		}
		m := readyRe.FindStringSubmatch(out)
		if m == nil {
			return false
		}
		if m[1] == "tcp" {
			s.Addr = "127.0.0.1:" + m[2]
		}
		return true
	})
}

// Stop kills the slave and waits for it to exit (a device going away).
func (s *PyModbusServer) Stop() {
	s.t.Helper()
	if s.proc == nil {
		return
	}
	_ = syscall.Kill(-s.proc.Cmd.Process.Pid, syscall.SIGKILL)
	WaitFor(s.t, 10*time.Second, "pymodbus slave to exit", func() bool {
		return syscall.Kill(s.proc.Cmd.Process.Pid, 0) != nil
	})
	s.proc = nil
}

// Restart starts a stopped slave again with the same data and, with tcp,
// on the same port.
func (s *PyModbusServer) Restart() {
	s.t.Helper()
	if s.proc != nil {
		s.t.Fatal("testpeer: Restart of a running pymodbus slave")
	}
	var js map[string]any
	data, err := os.ReadFile(s.conf)
	if err == nil {
		err = json.Unmarshal(data, &js)
	}
	if err != nil {
		s.t.Fatal(err)
	}
	if js["mode"] == "tcp" {
		_, port, _ := strings.Cut(s.Addr, ":")
		js["port"], _ = strconv.Atoi(port)
		data, _ = json.Marshal(js)
		if err := os.WriteFile(s.conf, data, 0o644); err != nil {
			s.t.Fatal(err)
		}
	}
	s.start(filepath.Join(filepath.Dir(s.conf), "pymodbus_server.py"))
}

// Read reads count values of table ("co", "di", "hr", "ir") from a TCP
// slave with pymodbus' own client, independent of fieldgate's: a test's
// check of what a write really put into the device.
func (s *PyModbusServer) Read(unit int, table string, addr, count int) []int {
	s.t.Helper()
	script := filepath.Join(filepath.Dir(s.conf), "pymodbus_server.py")
	out, err := exec.Command("/usr/bin/python3", script, "read", s.Addr, strconv.Itoa(unit), table,
		strconv.Itoa(addr), strconv.Itoa(count)).CombinedOutput()
	if err != nil {
		s.t.Fatalf("pymodbus read %s %d+%d of unit %d: %v: %s", table, addr, count, unit, err, out)
	}
	var vs []int
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &vs); err != nil {
		s.t.Fatalf("pymodbus read: %q: %v", out, err)
	}
	return vs
}

// Writes returns the write requests the slave carried out so far, one
// "WRITE FC ADDRESS VALUE..." line each.
func (s *PyModbusServer) Writes() []string {
	if s.proc == nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(s.proc.Log.String(), "\n") {
		if strings.HasPrefix(l, "WRITE ") {
			out = append(out, l)
		}
	}
	return out
}

// String names the slave in test logs.
func (s *PyModbusServer) String() string { return fmt.Sprintf("pymodbus slave at %s", s.Addr) }
