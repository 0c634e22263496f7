// Package compose holds the lab-bench docker-compose files. This test checks
// them against the collectors' own parsers without a Docker engine: every
// environment variable a service sets is one a collector reads, its values
// are valid, each mounted collector file parses, every image is one the
// project builds, and the simulated devices serve what the collectors read.
// compose/benchtest runs the bench for real on a private Docker engine.
package compose

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"fieldgate/collectors/modbus"
	"fieldgate/collectors/opcua"
	"fieldgate/collectors/runenv"
	"fieldgate/devices/profiles"
)

type service struct {
	Image       string            `yaml:"image"`
	ReadOnly    bool              `yaml:"read_only"`
	Privileged  bool              `yaml:"privileged"`
	Devices     []string          `yaml:"devices"`
	Profiles    []string          `yaml:"profiles"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
}

// projectImages are the images `make images` builds; the bench uses no other.
var projectImages = []string{"fieldgate/collector-modbus:latest", "fieldgate/collector-opcua:latest",
	"fieldgate/devsim:latest", "fieldgate/mosquitto:latest"}

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
	var collectors []string
	for name, svc := range file.Services {
		if !slices.Contains(projectImages, svc.Image) {
			t.Errorf("service %s: image %q is not one the project builds (%v): the bench pulls from no registry", name, svc.Image, projectImages)
		}
		protocol, ok := strings.CutPrefix(strings.TrimSuffix(svc.Image, ":latest"), "fieldgate/collector-")
		if !ok {
			continue
		}
		collectors = append(collectors, name)
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
	slices.Sort(collectors)
	if want := []string{"modbus", "modbus-serial", "opcua"}; !slices.Equal(collectors, want) {
		t.Errorf("collector services %v, want %v", collectors, want)
	}
	// The serial collector, as the deployment guide shows it.
	serial := file.Services["modbus-serial"]
	if !serial.Privileged || !slices.Equal(serial.Devices, []string{"/dev/ttyUSB0:/dev/ttyUSB0"}) || !slices.Equal(serial.Profiles, []string{"serial"}) {
		t.Errorf("modbus-serial: privileged %v, devices %v, profiles %v; want true, [/dev/ttyUSB0:/dev/ttyUSB0], [serial]",
			serial.Privileged, serial.Devices, serial.Profiles)
	}
	checkSimulatedDevices(t, file.Services)
}

// checkSimulatedDevices: the OPC UA collector's nodes are variables devsim
// opcua serves (ns=1;s=DEVICE.TAG of the profile given to --device), and the
// Modbus collector's devices are units devsim modbus serves with the same
// profile.
func checkSimulatedDevices(t *testing.T, svcs map[string]service) {
	flagValues := func(cmd []string, flag string) map[string]string {
		out := map[string]string{}
		for i := 0; i+1 < len(cmd); i++ {
			if cmd[i] == flag {
				k, v, _ := strings.Cut(cmd[i+1], "=")
				out[k] = v
			}
		}
		return out
	}
	devices := flagValues(svcs["devsim-opcua"].Command, "--device")
	var c opcua.Config
	if err := c.ApplyEnv(func(k string) string { return svcs["opcua"].Environment[k] }); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		dev, tag, ok := strings.Cut(strings.TrimPrefix(n.NodeID, "ns=1;s="), ".")
		p, err := profiles.Lookup(devices[dev])
		if !ok || err != nil || !slices.ContainsFunc(p.Tags, func(pt profiles.Tag) bool { return pt.Name == tag }) {
			t.Errorf("OPC UA node %s: devsim opcua serves no such variable (devices %v)", n.NodeID, devices)
		}
	}
	units := flagValues(svcs["devsim-modbus"].Command, "--unit")
	cfg, err := modbus.LoadConfig("modbus.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range cfg.Devices {
		if got := units[strconv.Itoa(d.UnitID)]; got != d.Profile {
			t.Errorf("device %s: unit %d has profile %q in devsim modbus, %q in modbus.yaml", d.Name, d.UnitID, got, d.Profile)
		}
	}
}
