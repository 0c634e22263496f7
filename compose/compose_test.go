// Package compose holds the lab-bench docker-compose files. No Docker engine
// runs in CI, so this test checks the files against the collectors' own
// parsers: every environment variable a service sets is one a collector
// reads, its values are valid, and each mounted collector file parses.
package compose

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"fieldgate/collectors/modbus"
	"fieldgate/collectors/opcua"
	"fieldgate/collectors/runenv"
)

type service struct {
	Image       string            `yaml:"image"`
	ReadOnly    bool              `yaml:"read_only"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
}

// knownEnv is every variable the collectors read.
var knownEnv = map[string]bool{
	"POLL_INTERVAL": true, "MQTT_BROKER": true, "MQTT_USERNAME": true, "MQTT_PASSWORD_FILE": true,
	"MQTT_CA_FILE": true, "MQTT_CERT_FILE": true, "MQTT_KEY_FILE": true, "MQTT_TOPIC_PREFIX": true,
	"GATEWAY_ID": true, "COLLECTOR_NAME": true, "COLLECTOR_CONFIG": true, "DATA_DIR": true, "LOG_LEVEL": true,
	"QUEUE_MAX_BYTES": true, "QUEUE_MAX_AGE": true, "QUEUE_SYNC": true, "QUEUE_POLICY": true,
	opcua.EnvEndpoint: true, opcua.EnvMode: true, opcua.EnvSecurity: true, opcua.EnvNodes: true,
}

func TestComposeServicesMatchTheCollectors(t *testing.T) {
	raw, err := os.ReadFile("docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Services map[string]service `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	collectors := 0
	for name, svc := range file.Services {
		protocol, ok := strings.CutPrefix(strings.TrimSuffix(svc.Image, ":latest"), "fieldgate/collector-")
		if !ok {
			continue
		}
		collectors++
		t.Run(name, func(t *testing.T) {
			if !svc.ReadOnly {
				t.Errorf("collector %q should run with a read-only root file system, as on the gateway", name)
			}
			for k := range svc.Environment {
				if !knownEnv[k] {
					t.Errorf("variable %s is read by no collector", k)
				}
			}
			getenv := func(k string) string { return svc.Environment[k] }
			if _, err := runenv.Load(getenv, protocol); err != nil {
				t.Errorf("environment: %v", err)
			}
			mounted := ""
			for _, v := range svc.Volumes {
				parts := strings.Split(v, ":")
				if len(parts) >= 2 && parts[1] == svc.Environment["COLLECTOR_CONFIG"] {
					mounted = filepath.Clean(parts[0])
				}
			}
			switch protocol {
			case "modbus":
				if mounted == "" {
					t.Fatal("no collector file mounted at COLLECTOR_CONFIG")
				}
				if _, err := modbus.LoadConfig(mounted); err != nil {
					t.Errorf("%v", err)
				}
			case "opcua":
				var c opcua.Config
				if mounted != "" {
					if c, err = opcua.LoadFile(mounted); err != nil {
						t.Fatalf("%v", err)
					}
				}
				if err := c.ApplyEnv(getenv); err != nil {
					t.Errorf("OPC UA environment: %v", err)
				}
				if len(c.Nodes) == 0 || c.Endpoint == "" {
					t.Errorf("no endpoint or nodes from the environment: %+v", c)
				}
			default:
				t.Errorf("unknown collector image %q", svc.Image)
			}
		})
	}
	if collectors != 2 {
		t.Errorf("found %d collector services, want the modbus and the opcua one", collectors)
	}
}
