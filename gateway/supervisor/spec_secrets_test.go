package supervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"fieldgate/gateway/config"
)

// TestBuildSpecSecretFiles: every secret file the config names is mounted
// read-only, and the collector's file names the container paths only.
func TestBuildSpecSecretFiles(t *testing.T) {
	dir := t.TempDir()
	file := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("secret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	mqttPW, opPW, cert, key := file("mqtt.pass"), file("op.pass"), file("client.pem"), file("client.key")
	trusted := filepath.Join(dir, "trusted")
	if err := os.Mkdir(trusted, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("gateway.yaml", []byte(fmt.Sprintf(`version: 1
gateway: {id: gw, data_dir: %q}
mqtt: {broker: ssl://broker.local, username: gw, password_file: %q}
collectors:
  - name: opcua-boiler
    image: fieldgate/collector-opcua:latest
    opcua:
      endpoint: opc.tcp://10.0.0.5:4840
      security: {policy: Basic256Sha256, mode: SignAndEncrypt, cert_file: %q, key_file: %q}
      trust_dir: %q
      auth: {username: op, password_file: %q}
      nodes:
        - {device: boiler1, name: temperature, node_id: "ns=2;s=Boiler1.Temperature"}
`, dir, mqttPW, cert, key, trusted, opPW)))
	if err != nil {
		t.Fatal(err)
	}
	spec := BuildSpec(cfg, &cfg.Collectors[0])
	want := map[string]string{ // host → container, all read-only
		mqttPW:  "/etc/fieldgate/mqtt/password",
		cert:    "/etc/fieldgate/opcua/security.cert_file",
		key:     "/etc/fieldgate/opcua/security.key_file",
		trusted: "/etc/fieldgate/opcua/trust_dir",
		opPW:    "/etc/fieldgate/opcua/auth.password_file",
	}
	for _, m := range spec.Mounts {
		if dst, ok := want[m.Source]; ok {
			if m.Destination != dst || !m.ReadOnly {
				t.Errorf("mount %+v, want read-only at %s", m, dst)
			}
			delete(want, m.Source)
		}
	}
	if len(want) > 0 {
		t.Errorf("not mounted: %v", want)
	}
	for _, host := range []string{mqttPW, opPW, cert, key, trusted} {
		if strings.Contains(string(spec.Config), host) {
			t.Errorf("collector file names the host path %s:\n%s", host, spec.Config)
		}
	}
	if !strings.Contains(string(spec.Config), "password_file: /etc/fieldgate/opcua/auth.password_file") {
		t.Errorf("collector file does not name the mounted password file:\n%s", spec.Config)
	}
}
