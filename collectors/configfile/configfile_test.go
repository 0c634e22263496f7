package configfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

type serial struct {
	Port string `yaml:"port"`
	Baud int    `yaml:"baud"`
}

type tag struct {
	Name  string   `yaml:"name"`
	Scale *float64 `yaml:"scale"`
	Pos   Pos      `yaml:"-"`
}

type base struct {
	Version int `yaml:"version"`
}

type sample struct {
	base      `yaml:",inline"`
	Transport string            `yaml:"transport"`
	Timeout   Duration          `yaml:"timeout"`
	Serial    serial            `yaml:"serial"`
	Tags      []tag             `yaml:"tags"`
	Env       map[string]string `yaml:"env"`
	Enabled   bool              `yaml:"enabled"`
}

func TestDecodeGood(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "sample.good.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var s sample
	if err := Decode("testdata/sample.good.yml", data, &s); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if s.Version != 1 || s.Transport != "rtu" || s.Timeout.D() != 500*time.Millisecond || s.Serial.Baud != 19200 || !s.Enabled {
		t.Errorf("decoded %+v", s)
	}
	if len(s.Tags) != 2 || s.Tags[0].Pos.Line != 8 || s.Tags[1].Scale == nil || *s.Tags[1].Scale != 0.01 || s.Tags[0].Scale != nil {
		t.Errorf("tags %+v", s.Tags)
	}
	if s.Env["LOG_LEVEL"] != "debug" {
		t.Errorf("env %+v", s.Env)
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		opts []Option
		want []string
	}{
		{
			name: "every problem listed with its line",
			yaml: "transport: rtu\nbogus: 1\nserial:\n  port: /dev/ttyUSB0\n  baud: fast\n  parity: N\ntimeout: 5x\n",
			want: []string{
				`f.yml:2: unknown key "bogus" (valid: enabled, env, serial, tags, timeout, transport, version)`,
				`f.yml:5: serial.baud: cannot use "fast" as an integer`,
				`f.yml:6: serial: unknown key "parity" (valid: baud, port)`,
				`f.yml:7: timeout: invalid duration "5x" (want e.g. 500ms, 5s, 1m)`,
			},
		},
		{
			name: "duplicate key",
			yaml: "transport: rtu\ntransport: tcp\n",
			want: []string{`f.yml:2: duplicate key "transport"`},
		},
		{
			name: "syntax error",
			yaml: "transport: [rtu\n",
			want: []string{`f.yml:1: invalid YAML: did not find expected ',' or ']'`},
		},
		{
			name: "wrong shapes",
			yaml: "tags: {name: x}\nserial: [1]\nenabled: maybe\n",
			want: []string{
				`f.yml:1: tags: want a list, got a mapping`,
				`f.yml:2: serial: want a mapping, got a list`,
				`f.yml:3: enabled: cannot use "maybe" as true or false`,
			},
		},
		{
			name: "unwrap only a single matching key",
			yaml: "modbus:\n  transport: tcp\nother: 1\n",
			opts: []Option{Unwrap("modbus")},
			want: []string{
				`f.yml:1: unknown key "modbus" (valid: enabled, env, serial, tags, timeout, transport, version)`,
				`f.yml:3: unknown key "other" (valid: enabled, env, serial, tags, timeout, transport, version)`,
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s sample
			err := Decode("f.yml", []byte(tc.yaml), &s, tc.opts...)
			var errs *Errors
			if !errors.As(err, &errs) {
				t.Fatalf("Decode error = %v, want *Errors", err)
			}
			if got := strings.Join(errs.Lines(), "\n"); got != strings.Join(tc.want, "\n") {
				t.Errorf("errors:\n%s\nwant:\n%s", got, strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestUnwrap(t *testing.T) {
	var s sample
	if err := Decode("f.yml", []byte("modbus:\n  transport: tcp\n"), &s, Unwrap("modbus")); err != nil {
		t.Fatal(err)
	}
	if s.Transport != "tcp" {
		t.Errorf("transport = %q", s.Transport)
	}
}

func TestEmptyFile(t *testing.T) {
	var s sample
	if err := Decode("f.yml", nil, &s); err != nil {
		t.Fatal(err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("transport: rtu\nserial: {port: /dev/x, baud: 9600}\ntags: [{name: a, scale: 2}]\n"))
	f.Add([]byte("a: &x {b: 1}\nc: *x\n"))
	f.Add([]byte("version: 1\ntags:\n  - name: a\n    scale: 2\n  - {name: b}\nenv: {A: b}\n"))
	f.Add([]byte("modbus:\n  tags:\n  - name: a\n  - name: b\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		// Item by item or whole, the same value and the same errors.
		var whole, streamed sample
		errWhole := Decode("f.yml", data, &whole, Unwrap("modbus"))
		errStreamed := Decode("f.yml", data, &streamed, Unwrap("modbus"), StreamList("tags"))
		if fmt.Sprint(errWhole) != fmt.Sprint(errStreamed) {
			t.Fatalf("whole: %v\nitem by item: %v", errWhole, errStreamed)
		}
		if !reflect.DeepEqual(whole, streamed) {
			t.Fatalf("whole %+v\nitem by item %+v", whole, streamed)
		}
	})
}

// TestStreamList: a list decoded item by item is the list decoded whole,
// positions included, and a file with a problem gets the whole file's
// errors.
func TestStreamList(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "sample.good.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, items, ok := SplitList(data, "tags", ""); !ok || len(items) != 2 {
		t.Fatalf("sample.good.yml is not cut into its 2 tags (ok %v, %d items)", ok, len(items))
	}
	var whole, streamed sample
	if err := Decode("s.yml", data, &whole); err != nil {
		t.Fatal(err)
	}
	if err := Decode("s.yml", data, &streamed, StreamList("tags")); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(whole, streamed) {
		t.Errorf("whole %+v\nitem by item %+v", whole, streamed)
	}
	bad := append(append([]byte(nil), data...), "  - {name: c, colour: red}\n"...)
	errWhole := Decode("s.yml", bad, &whole)
	errStreamed := Decode("s.yml", bad, &streamed, StreamList("tags"))
	if errWhole == nil || errWhole.Error() != errStreamed.Error() {
		t.Errorf("whole: %v\nitem by item: %v", errWhole, errStreamed)
	}
}
