package opcua

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"fieldgate/collectors/configfile"
)

var update = flag.Bool("update", false, "rewrite testdata/*.errors golden files")

func TestParseGood(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.good.yml")
	if len(files) == 0 {
		t.Fatal("no testdata/*.good.yml")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			if _, err := LoadFile(file); err != nil {
				t.Fatalf("LoadFile: %v", err)
			}
		})
	}
}

// TestParseBad checks each testdata/*.bad.yml against the exact
// "FILE:LINE: message" lines of its .errors file (go test -update rewrites
// them; review the diff).
func TestParseBad(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.bad.yml")
	if len(files) == 0 {
		t.Fatal("no testdata/*.bad.yml")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			_, err := LoadFile(file)
			var errs *configfile.Errors
			if !errors.As(err, &errs) {
				t.Fatalf("LoadFile = %v, want *configfile.Errors", err)
			}
			got := strings.Join(errs.Lines(), "\n") + "\n"
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

func TestParseValues(t *testing.T) {
	c, err := LoadFile("testdata/subscribe.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	if c.PublishingInterval.D() != time.Second || c.QueueSize != 5 || c.Mode != ModeSubscribe {
		t.Errorf("interval %s queue %d mode %q", c.PublishingInterval, c.QueueSize, c.Mode)
	}
	if c.Auth == nil || c.Auth.Username != "op" || c.Auth.kind().String() != "UserTokenTypeUserName" {
		t.Errorf("auth = %+v", c.Auth)
	}
	if d := c.Nodes[0].Deadband; d == nil || d.Type != DeadbandAbsolute || d.Value != 0.5 {
		t.Errorf("deadband = %+v", d)
	}
	if c.Nodes[2].SamplingInterval.D() != 250*time.Millisecond {
		t.Errorf("sampling_interval = %s", c.Nodes[2].SamplingInterval)
	}
	w, err := LoadFile("testdata/wrapped.good.yml")
	if err != nil {
		t.Fatal(err)
	}
	if w.Mode != ModePoll || w.Auth == nil || !w.Auth.Anonymous || w.Security.Policy != PolicyNone {
		t.Errorf("wrapped = %+v", w)
	}
	d := w.withDefaults(2 * time.Second)
	if d.PublishingInterval.D() != 2*time.Second || d.QueueSize != 1 {
		t.Errorf("defaults: interval %s queue %d, want POLL_INTERVAL and 1", d.PublishingInterval, d.QueueSize)
	}
}

func TestFiles(t *testing.T) {
	c, err := Parse("f.yml", []byte(`endpoint: opc.tcp://h:4840
security: {policy: Basic256Sha256, mode: SignAndEncrypt, cert_file: /s/c.pem, key_file: /s/k.pem, server_cert: /s/srv.der}
trust_dir: /s/trusted
auth: {username: op, password_file: /s/op.pass}
nodes: [{device: d, name: t, node_id: "i=2258"}]
`))
	if err != nil {
		t.Fatal(err)
	}
	got := c.Files()
	want := []FileRef{
		{Key: "security.cert_file", Path: "/s/c.pem"}, {Key: "security.key_file", Path: "/s/k.pem"},
		{Key: "security.server_cert", Path: "/s/srv.der"}, {Key: "trust_dir", Path: "/s/trusted", Dir: true},
		{Key: "auth.password_file", Path: "/s/op.pass"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Files() = %+v\nwant %+v", got, want)
	}
}
