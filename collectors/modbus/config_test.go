package modbus

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"fieldgate/collectors/configfile"
	"fieldgate/devices/profiles"
)

var update = flag.Bool("update", false, "rewrite testdata/*.errors golden files")

func TestParseConfigGood(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.good.yml")
	if len(files) == 0 {
		t.Fatal("no testdata/*.good.yml")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			cfg, err := LoadConfig(file)
			if err != nil {
				t.Fatalf("LoadConfig:\n%v", err)
			}
			if len(cfg.Devices) == 0 {
				t.Fatal("no devices")
			}
			for i := range cfg.Devices {
				d := &cfg.Devices[i]
				p := NewPlan(d)
				if len(p.Skipped()) != 0 {
					t.Errorf("device %q: tags %v cannot be planned", d.Name, p.Skipped())
				}
				checkPlan(t, d, p)
			}
		})
	}
}

// TestParseConfigBad checks each testdata/*.bad.yml against the exact
// "FILE:LINE: message" lines in its sibling .errors file (go test -update
// rewrites them; review the diff).
func TestParseConfigBad(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.bad.yml")
	if len(files) == 0 {
		t.Fatal("no testdata/*.bad.yml")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			cfg, err := LoadConfig(file)
			if err == nil {
				t.Fatalf("LoadConfig accepted the file: %+v", cfg)
			}
			if cfg != nil {
				t.Error("LoadConfig returned a config with an error")
			}
			var errs *configfile.Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error %T is not *configfile.Errors: %v", err, err)
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(file, ".yml") + ".errors"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, rerr := os.ReadFile(golden)
			if rerr != nil {
				t.Fatalf("%v (run go test -update to create it)", rerr)
			}
			if got != string(want) {
				t.Errorf("errors differ from %s\ngot:\n%s\nwant:\n%s", golden, got, want)
			}
		})
	}
}

func TestParseConfigDefaults(t *testing.T) {
	cfg, err := ParseConfig("min.yml", []byte(`
transport: rtu
serial: {port: /dev/ttyUSB0}
devices:
  - name: m
    tags:
      - {name: c, table: coil, address: 1}
      - {name: f, table: input_register, address: 0, type: float32}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := SerialConfig{Port: "/dev/ttyUSB0", Baud: 19200, DataBits: 8, Parity: "N", StopBits: 1, Pos: cfg.Serial.Pos}
	if cfg.Serial != want {
		t.Errorf("Serial = %+v, want %+v", cfg.Serial, want)
	}
	if cfg.Timeout.D() != 500*time.Millisecond || cfg.Retries != 1 {
		t.Errorf("Timeout, Retries = %v, %d; want 500ms, 1", cfg.Timeout, cfg.Retries)
	}
	if cfg.Backoff.Initial.D() != time.Second || cfg.Backoff.Max.D() != time.Minute {
		t.Errorf("Backoff = %v..%v, want 1s..1m", cfg.Backoff.Initial, cfg.Backoff.Max)
	}
	d := cfg.Devices[0]
	if d.UnitID != 1 || d.MaxRegistersPerRequest != 125 || d.MaxBitsPerRequest != 2000 || d.MaxGap != DefaultMaxGap {
		t.Errorf("device defaults: unit %d, max regs %d, max bits %d, max gap %d",
			d.UnitID, d.MaxRegistersPerRequest, d.MaxBitsPerRequest, d.MaxGap)
	}
	if d.Tags[0].Type != TypeBool || d.Tags[0].ByteOrder != "" {
		t.Errorf("coil tag: type %q, byte order %q; want bool, none", d.Tags[0].Type, d.Tags[0].ByteOrder)
	}
	if d.Tags[1].ByteOrder != ByteOrderABCD {
		t.Errorf("register tag byte order %q, want ABCD", d.Tags[1].ByteOrder)
	}
	if d.Pos.Line != 5 || d.Tags[1].Pos.Line != 8 || cfg.Serial.Pos.Line != 3 {
		t.Errorf("positions: device line %d, tag line %d, serial line %d; want 5, 8, 3", d.Pos.Line, d.Tags[1].Pos.Line, cfg.Serial.Pos.Line)
	}
}

// TestParseConfigExplicitZero: retries 0, max_gap 0 and unit_id 0 (tcp) are
// honoured, not replaced by defaults.
func TestParseConfigExplicitZero(t *testing.T) {
	cfg, err := ParseConfig("zero.yml", []byte(`
transport: tcp
tcp: {address: plc.local}
retries: 0
devices:
  - {name: p, unit_id: 0, max_gap: 0, tags: [{name: v, table: holding_register, address: 0, type: uint16}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Devices[0]
	if cfg.Retries != 0 || d.MaxGap != 0 || d.UnitID != 0 {
		t.Errorf("retries %d, max_gap %d, unit_id %d; want all 0", cfg.Retries, d.MaxGap, d.UnitID)
	}
	if cfg.TCP.Address != "plc.local:502" || d.Address != "plc.local:502" {
		t.Errorf("tcp address %q, device address %q; want plc.local:502 (default port)", cfg.TCP.Address, d.Address)
	}
}

func TestParseConfigTCPAddresses(t *testing.T) {
	cfg, err := LoadConfig("testdata/tcp.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"plc1": "10.0.0.7:502", "plc2": "10.0.0.8:502", "gw-meter-a": "[fd00::1]:1502",
		"gw-meter-b": "[fd00::1]:1502", "plc1-b": "10.0.0.7:502",
	}
	for _, d := range cfg.Devices {
		if d.Address != want[d.Name] {
			t.Errorf("device %q address %q, want %q", d.Name, d.Address, want[d.Name])
		}
	}
	if cfg.Backoff.Initial.D() != 500*time.Millisecond || cfg.Backoff.Max.D() != 30*time.Second || cfg.Retries != 2 {
		t.Errorf("backoff %v..%v retries %d", cfg.Backoff.Initial, cfg.Backoff.Max, cfg.Retries)
	}
}

func TestParseConfigProfile(t *testing.T) {
	p, err := profiles.Lookup("eastron-sdm630")
	if err != nil {
		t.Fatal(err)
	}
	first := p.Tags[0]
	data := `
transport: rtu
serial: {port: /dev/ttyUSB0}
devices:
  - name: m
    unit_id: 2
    profile: eastron-sdm630
    tags:
      - {name: ` + first.Name + `, table: holding_register, address: 500, type: uint16, unit: X}
      - {name: extra, table: coil, address: 3}
`
	cfg, err := ParseConfig("p.yml", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	tags := cfg.Devices[0].Tags
	if len(tags) != len(p.Tags)+1 {
		t.Fatalf("%d tags, want the profile's %d plus 1", len(tags), len(p.Tags))
	}
	if tags[0].Name != first.Name || tags[0].Address != 500 || tags[0].Unit != "X" {
		t.Errorf("override: %+v", tags[0])
	}
	if last := tags[len(tags)-1]; last.Name != "extra" || last.Table != TableCoil {
		t.Errorf("extension: %+v", last)
	}
	for i, pt := range p.Tags[1:] {
		got := tags[i+1]
		if got.Name != pt.Name || string(got.Table) != pt.Table || got.Address != pt.Address || string(got.Type) != pt.Type ||
			got.Unit != pt.Unit || got.Length != pt.Length || got.Offset != pt.Offset {
			t.Errorf("profile tag %d: got %+v, want %+v", i+1, got, pt)
		}
		if got.Pos != cfg.Devices[0].Pos {
			t.Errorf("profile tag %q has position %v, want the device's %v", got.Name, got.Pos, cfg.Devices[0].Pos)
		}
	}
}

// TestProfilesParse: every embedded profile is a valid device on its own.
func TestProfilesParse(t *testing.T) {
	names := profiles.Names()
	if len(names) < 2 {
		t.Fatalf("profiles.Names() = %v, want at least two", names)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			data := "transport: tcp\ntcp: {address: 127.0.0.1:502}\ndevices: [{name: d, profile: " + name + "}]\n"
			cfg, err := ParseConfig(name+".yml", []byte(data))
			if err != nil {
				t.Fatal(err)
			}
			d := &cfg.Devices[0]
			p := NewPlan(d)
			checkPlan(t, d, p)
			if len(p.Skipped()) != 0 {
				t.Errorf("skipped tags %v", p.Skipped())
			}
		})
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.yml")
	_, err := LoadConfig(path)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("LoadConfig(missing) = %v, want a not-exist error naming the file", err)
	}
}

func TestNormalizeTCPAddress(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{"10.0.0.7:502", "10.0.0.7:502", ""},
		{"10.0.0.7", "10.0.0.7:502", ""},
		{"plc.local:1502", "plc.local:1502", ""},
		{"[fd00::1]:502", "[fd00::1]:502", ""},
		{"[fd00::1]", "[fd00::1]:502", ""},
		{":502", "", "no host"},
		{"host:0", "", "bad port"},
		{"host:99999", "", "bad port"},
		{"a:b:c", "", "want host:port"},
	}
	for _, tc := range tests {
		got, err := normalizeTCPAddress(tc.in)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("normalizeTCPAddress(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("normalizeTCPAddress(%q) = %q, %v; want error with %q", tc.in, got, err, tc.err)
		}
	}
}

func TestValidListsInErrors(t *testing.T) {
	_, err := ParseConfig("x.yml", []byte("transport: rtu\nserial: {port: p}\ndevices: [{name: d, tags: [{name: t, table: x, type: y, byte_order: z}]}]\n"))
	for _, want := range []string{
		"coil, discrete_input, holding_register, input_register",
		strings.Join([]string{"bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"}, ", "),
		"ABCD, DCBA, BADC, CDAB",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not list %q", err, want)
		}
	}
	if !slices.Contains(profiles.Names(), "eastron-sdm630") {
		t.Error("profile eastron-sdm630 is not embedded")
	}
}

// TestParseSplitMatchesWhole: a file decoded one device at a time gives the
// very Config the whole node tree gives — the good fixtures, and generated
// files in every shape the cut takes; a file with any problem is left to
// the whole-tree parse.
func TestParseSplitMatchesWhole(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.yml")
	docs := map[string][]byte{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs[filepath.Base(f)] = data
	}
	gen := func(ind string) string { // ind: the device list's indentation
		var b strings.Builder
		b.WriteString("# a cell\ntransport: tcp\ntimeout: 2s\ndevices:\n")
		for i := 0; i < 30; i++ {
			fmt.Fprintf(&b, "%[1]s# plc %[2]d\n%[1]s- name: plc%02[2]d\n%[1]s  address: 10.0.0.%[3]d\n%[1]s  unit_id: %[4]d\n%[1]s  tags:\n", ind, i, i+1, i%3+1)
			for r := 0; r < 20; r++ {
				if r%2 == 0 {
					fmt.Fprintf(&b, "%s    - {name: r%02d, table: holding_register, address: %d, type: uint16, unit: count}\n", ind, r, r)
				} else {
					fmt.Fprintf(&b, "%[1]s    - name: r%02[2]d\n%[1]s      table: input_register\n%[1]s      address: %[2]d\n%[1]s      type: int16\n%[1]s      scale: 0.1\n", ind, r)
				}
			}
			if i%10 == 9 {
				fmt.Fprintf(&b, "\n%s- {name: meter%02d, address: 10.0.1.%d, profile: eastron-sdm120}\n", ind, i, i)
			}
		}
		b.WriteString("retries: 2\n")
		return b.String()
	}
	docs["generated"] = []byte(gen("  "))
	docs["generated crlf"] = []byte(strings.ReplaceAll(gen("  "), "\n", "\r\n"))
	docs["generated wrapped"] = []byte("modbus:\n" + indentLines(gen("  "), "  "))
	docs["generated compact"] = []byte(gen(""))
	mustSplit := []string{"generated", "generated crlf", "generated wrapped", "generated compact", "tcp.good.yml", "rtu.good.yml"}
	for name, data := range docs {
		split, ok := parseSplit(name, data)
		whole, err := parseWhole(name, data)
		switch {
		case ok && err != nil:
			t.Errorf("%s: accepted one device at a time, but the whole file has problems:\n%v", name, err)
		case ok && !reflect.DeepEqual(split, whole):
			t.Errorf("%s: one device at a time gives another config than the whole tree", name)
		case !ok && slices.Contains(mustSplit, name):
			t.Errorf("%s: not parsed one device at a time", name)
		}
		if strings.Contains(name, ".bad.") && ok {
			t.Errorf("%s: a bad file passed one device at a time", name)
		}
	}
}

func indentLines(s, prefix string) string {
	lines := strings.SplitAfter(s, "\n")
	for i, l := range lines {
		if l != "" && l != "\n" {
			lines[i] = prefix + l
		}
	}
	return strings.Join(lines, "")
}
