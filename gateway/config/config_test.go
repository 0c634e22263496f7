package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"fieldgate/collectors/configfile"
)

// fakeFiles are the paths fakeStat says exist: devices, secret files and
// directories of the fixtures.
var fakeFiles = map[string]fs.FileMode{
	"/dev/ttyUSB0": fs.ModeDevice | fs.ModeCharDevice, "/dev/ttyUSB1": fs.ModeDevice | fs.ModeCharDevice,
	"/dev/ttyS0": fs.ModeDevice | fs.ModeCharDevice,
	"/dev/serial/by-path/pci-0000:00:14.0-usb-0:1:1.0-port0": fs.ModeDevice | fs.ModeCharDevice,
	"/dev/serial/by-path/pci-0000:00:14.0-usb-0:1:2.0-port0": fs.ModeDevice | fs.ModeCharDevice,
	"/etc/fieldgate/mqtt.pass":                               0o600, "/etc/gw.pem": 0o644, "/etc/fieldgate/ca.pem": 0o644, "/etc/fieldgate/gw.pem": 0o644, "/etc/fieldgate/gw.key": 0o600,
	"/etc/fieldgate/opcua/op.pass": 0o600, "/etc/fieldgate/opcua/client.pem": 0o644, "/etc/fieldgate/opcua/client.key": 0o600,
	"/etc/fieldgate/opcua/trusted": fs.ModeDir | 0o755,
}

type fakeInfo struct {
	name string
	mode fs.FileMode
}

func (f fakeInfo) Name() string       { return filepath.Base(f.name) }
func (f fakeInfo) Size() int64        { return 0 }
func (f fakeInfo) Mode() fs.FileMode  { return f.mode }
func (f fakeInfo) ModTime() time.Time { return time.Time{} }
func (f fakeInfo) IsDir() bool        { return f.mode.IsDir() }
func (f fakeInfo) Sys() any           { return nil }

// fakeStat says the paths of fakeFiles exist, nothing else.
func fakeStat(name string) (os.FileInfo, error) {
	if mode, ok := fakeFiles[name]; ok {
		return fakeInfo{name, mode}, nil
	}
	return nil, &fs.PathError{Op: "stat", Path: name, Err: fs.ErrNotExist}
}

func fakeHostname() (string, error) { return "test-host.example.com", nil }

var wantRe = regexp.MustCompile(`(?m)^# want: (\d+): (.*)$`)

// TestFixtures loads every testdata/*.good.yml (must load) and *.bad.yml
// (must fail with exactly the "# want: LINE: message-substring" lines it
// carries, in any order).
func TestFixtures(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := Parse(path, data, WithStat(fakeStat), WithHostname(fakeHostname))
			if strings.HasSuffix(path, ".good.yml") {
				if err != nil {
					t.Fatalf("want no error, got:\n%v", err)
				}
				if cfg.Version != 1 {
					t.Errorf("version = %d", cfg.Version)
				}
				return
			}
			if !strings.HasSuffix(path, ".bad.yml") {
				t.Fatalf("fixture must be *.good.yml or *.bad.yml")
			}
			var ce *configfile.Errors
			if !errors.As(err, &ce) {
				t.Fatalf("want *configfile.Errors, got %T: %v", err, err)
			}
			wants := wantRe.FindAllStringSubmatch(string(data), -1)
			if len(wants) == 0 {
				t.Fatalf("fixture has no '# want: LINE: message' lines; got:\n%v", err)
			}
			used := make([]bool, len(ce.List))
			for _, w := range wants {
				line, _ := strconv.Atoi(w[1])
				found := false
				for i, e := range ce.List {
					if !used[i] && e.Line == line && strings.Contains(e.Msg, w[2]) {
						used[i], found = true, true
						break
					}
				}
				if !found {
					t.Errorf("missing error %s:%d: %s", path, line, w[2])
				}
			}
			for i, e := range ce.List {
				if !used[i] {
					t.Errorf("unexpected error %v", e)
				}
				if e.File != path {
					t.Errorf("error names file %q, want %q", e.File, path)
				}
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := Load("testdata/minimal.good.yml", WithStat(fakeStat), WithHostname(fakeHostname))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct{ name, got, want string }{
		{"gateway.id", cfg.Gateway.ID, "test-host"},
		{"gateway.data_dir", cfg.Gateway.DataDir, "/var/lib/fieldgate"},
		{"gateway.listen", cfg.Gateway.Listen, "127.0.0.1:9273"},
		{"runtime.address", cfg.Runtime.Address, "/run/containerd/containerd.sock"},
		{"runtime.namespace", cfg.Runtime.Namespace, "fieldgate"},
		{"runtime.images_dir", cfg.Runtime.ImagesDir, "/var/lib/fieldgate/images"},
		{"mqtt.topic_prefix", cfg.MQTT.TopicPrefix, "fieldgate"},
		{"restart", cfg.Collectors[0].Restart, "always"},
		{"poll_interval", cfg.Collectors[0].PollInterval.String(), (5 * time.Second).String()},
		{"protocol", cfg.Collectors[0].Protocol, "modbus"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
}

func TestFullExample(t *testing.T) {
	cfg, err := Load("testdata/full.good.yml", WithStat(fakeStat), WithHostname(fakeHostname))
	if err != nil {
		t.Fatal(err)
	}
	m := cfg.Collectors[0]
	if m.Resources.MemoryBytes != 64<<20 || m.Resources.CPUs != 0.5 {
		t.Errorf("resources = %+v", m.Resources)
	}
	if !m.Privileged || m.Env["LOG_LEVEL"] != "info" || m.Devices[0] != "/dev/ttyUSB0" {
		t.Errorf("collector = %+v", m)
	}
	// The collector file holds the section's content at its top level.
	pc := string(m.ProtocolConfig)
	if !strings.HasPrefix(pc, "transport: rtu") || !strings.Contains(pc, "voltage_l1") || strings.Contains(pc, "modbus:") {
		t.Errorf("protocol config:\n%s", pc)
	}
	if cfg.Collectors[1].Protocol != ProtocolOPCUA || cfg.Collectors[1].Restart != RestartOnFailure {
		t.Errorf("opcua collector = %+v", cfg.Collectors[1])
	}
}

// TestSectionLines checks that a protocol parser sees the section with
// gateway.yaml's line numbers, in block and flow style.
func TestSectionLines(t *testing.T) {
	saved := ProtocolParsers
	t.Cleanup(func() { ProtocolParsers = saved })
	ProtocolParsers = map[string]ProtocolParser{
		ProtocolModbus: func(path string, data []byte) ([]ProtocolFile, error) {
			var v struct {
				Transport string `yaml:"transport"`
				Devices   []struct {
					Name string `yaml:"name"`
				} `yaml:"devices"`
			}
			return nil, configfile.Decode(path, data, &v)
		},
	}
	data := []byte(`version: 1
mqtt: {broker: x}
collectors:
  - name: a
    image: fieldgate/collector-modbus:latest
    modbus:
      transport: tcp
      devices:
        - name: d
          bogus: 1
  - name: b
    image: fieldgate/collector-modbus:latest
    modbus: {transport: tcp, devices: [
       {name: d, other: 2}]}
    restart: never
`)
	_, err := Parse("gw.yaml", data, WithStat(fakeStat), WithHostname(fakeHostname))
	want := "gw.yaml:10: collector \"a\": modbus: devices[0]: unknown key \"bogus\" (valid: name)\n" +
		"gw.yaml:14: collector \"b\": modbus: devices[0]: unknown key \"other\" (valid: name)"
	if err == nil || err.Error() != want {
		t.Fatalf("got:\n%v\nwant:\n%s", err, want)
	}
}

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		bad  bool
	}{
		{in: "64MiB", want: 64 << 20},
		{in: "128M", want: 128e6},
		{in: "1GiB", want: 1 << 30},
		{in: "1.5Gi", want: 3 << 29},
		{in: "512kb", want: 512e3},
		{in: "1048576", want: 1 << 20},
		{in: "64 MiB", want: 64 << 20},
		{in: "MiB", bad: true},
		{in: "64XB", bad: true},
		{in: "", bad: true},
		{in: "1.2.3M", bad: true},
	}
	for _, tt := range tests {
		got, err := ParseByteSize(tt.in)
		if (err != nil) != tt.bad || got != tt.want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d, bad=%v", tt.in, got, err, tt.want, tt.bad)
		}
	}
}

func TestHostnameID(t *testing.T) {
	for in, want := range map[string]string{"gw01": "gw01", "gw01.plant.local": "gw01", "my gw": "my-gw"} {
		if got := HostnameID(in); got != want {
			t.Errorf("HostnameID(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestProtocolConfigCanonical: comments and layout do not change the
// collector file (so they do not recreate the container); values do.
func TestProtocolConfigCanonical(t *testing.T) {
	parse := func(section string) string {
		t.Helper()
		data := "version: 1\nmqtt: {broker: x}\ncollectors:\n  - name: a\n    image: fieldgate/collector-modbus:latest\n" + section
		cfg, err := Parse("gw.yaml", []byte(data), WithStat(fakeStat), WithHostname(fakeHostname))
		if err != nil {
			t.Fatal(err)
		}
		return string(cfg.Collectors[0].ProtocolConfig)
	}
	block := parse(`    modbus:
      # the PLC
      transport: tcp   # not rtu
      tcp: {address: "10.0.0.7:502"}
      devices:
        - name: d
          tags: [{name: t, table: coil, address: 0}]
`)
	flow := parse(`    modbus: {transport: tcp, tcp: {address: "10.0.0.7:502"},
      devices: [{name: d, tags: [{name: t, table: coil, address: 0}]}]}
`)
	if block != flow {
		t.Errorf("layout changed the collector file:\n%s\nvs\n%s", block, flow)
	}
	if strings.Contains(block, "#") {
		t.Errorf("comments kept:\n%s", block)
	}
	changed := parse(`    modbus: {transport: tcp, tcp: {address: "10.0.0.8:502"},
      devices: [{name: d, tags: [{name: t, table: coil, address: 0}]}]}
`)
	if changed == flow {
		t.Error("a value change left the collector file unchanged")
	}
}

func TestParseDevice(t *testing.T) {
	const byPath = "/dev/serial/by-path/pci-0000:00:14.0-usb-0:1:1.0-port0"
	for _, tt := range []struct{ in, host, ctr, err string }{
		{"/dev/ttyUSB0", "/dev/ttyUSB0", "/dev/ttyUSB0", ""},
		{"/dev/ttyUSB1:/dev/ttyUSB0", "/dev/ttyUSB1", "/dev/ttyUSB0", ""},
		{"/dev/serial/by-id/usb-FTDI:/dev/ttyUSB1", "/dev/serial/by-id/usb-FTDI", "/dev/ttyUSB1", ""},
		{byPath, byPath, byPath, ""},
		{byPath + ":/dev/ttyUSB0", byPath, "/dev/ttyUSB0", ""},
		{"ttyUSB0", "", "", `device "ttyUSB0": want HOST[:CONTAINER], absolute paths`},
		{"relative:/dev/x", "", "", `device "relative:/dev/x": want HOST[:CONTAINER]`},
		// No ":/": one host path (validate then says it does not exist).
		{"/dev/ttyUSB0:ttyS0", "/dev/ttyUSB0:ttyS0", "/dev/ttyUSB0:ttyS0", ""},
		{"/dev/ttyUSB0:", "", "", `device "/dev/ttyUSB0:": empty container path`},
	} {
		d, err := ParseDevice(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseDevice(%q) = %+v, %v; want error %q", tt.in, d, err, tt.err)
			}
			continue
		}
		if err != nil || d.Host != tt.host || d.Container != tt.ctr {
			t.Errorf("ParseDevice(%q) = %+v, %v; want %s -> %s", tt.in, d, err, tt.host, tt.ctr)
		}
	}
}

// TestSecretFiles: the files an OPC UA section names are listed for
// mounting and the collector's file names their container paths.
func TestSecretFiles(t *testing.T) {
	for _, file := range []string{"testdata/opcua-files.good.yml"} {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := Parse(file, data, WithStat(fakeStat), WithHostname(fakeHostname))
			if err != nil {
				t.Fatal(err)
			}
			c := cfg.Collectors[0]
			want := []SecretFile{
				{Key: "security.cert_file", Host: "/etc/fieldgate/opcua/client.pem", Container: "/etc/fieldgate/opcua/security.cert_file"},
				{Key: "security.key_file", Host: "/etc/fieldgate/opcua/client.key", Container: "/etc/fieldgate/opcua/security.key_file"},
				{Key: "trust_dir", Host: "/etc/fieldgate/opcua/trusted", Container: "/etc/fieldgate/opcua/trust_dir", Dir: true},
				{Key: "auth.password_file", Host: "/etc/fieldgate/opcua/op.pass", Container: "/etc/fieldgate/opcua/auth.password_file"},
			}
			if !slices.Equal(c.SecretFiles, want) {
				t.Errorf("SecretFiles = %+v\nwant %+v", c.SecretFiles, want)
			}
			pc := string(c.ProtocolConfig)
			for _, w := range want {
				if !strings.Contains(pc, w.Container) || strings.Contains(pc, w.Host) {
					t.Errorf("collector file does not name %s instead of %s:\n%s", w.Container, w.Host, pc)
				}
			}
			// The collector's own parser accepts the rewritten file.
			if _, err := ProtocolParsers[ProtocolOPCUA]("collector.yaml", c.ProtocolConfig); err != nil {
				t.Errorf("collector file rejected: %v\n%s", err, pc)
			}
		})
	}
}
