// Package config loads and validates gateway.yaml, the fieldgate supervisor's
// configuration (schema: DESIGN.md "Gateway config").
//
// Loading is strict: unknown keys, type errors, bad durations and every semantic
// problem are reported together as "FILE:LINE: message" lines (a
// *configfile.Errors). The protocol sections (`modbus:`, `opcua:`) are validated by
// the collectors' own parsers, with their errors mapped back to gateway.yaml lines.
//
// Defaults are exported values (DefaultConfig, DefaultGateway, DefaultRuntime,
// DefaultMQTT, DefaultCollector); a key that is absent or empty takes the default.
package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"fieldgate/collectors/configfile"
)

// Version is the only gateway.yaml schema version this package reads.
const Version = 1

// Restart policies of a collector.
const (
	RestartAlways        = "always"
	RestartOnFailure     = "on-failure"
	RestartUnlessStopped = "unless-stopped"
	RestartNever         = "never"
)

// RestartPolicies lists the valid values of a collector's `restart`.
var RestartPolicies = []string{RestartAlways, RestartOnFailure, RestartUnlessStopped, RestartNever}

// Protocol section keys of a collector.
const (
	ProtocolModbus = "modbus"
	ProtocolOPCUA  = "opcua"
)

// Defaults. A key absent from gateway.yaml (or empty) takes these values;
// gateway.id defaults to the host name and runtime.images_dir to
// {gateway.data_dir}/images.
var (
	DefaultGateway = Gateway{
		DataDir: "/var/lib/fieldgate",
		Listen:  "127.0.0.1:9273",
	}
	DefaultRuntime = Runtime{
		Address:     "/run/containerd/containerd.sock",
		Namespace:   "fieldgate",
		Snapshotter: "overlayfs",
	}
	DefaultMQTT = MQTT{
		TopicPrefix: "fieldgate",
		Output:      Output{Payload: PayloadFieldgate},
	}
	DefaultCollector = Collector{
		PollInterval: configfile.Duration(5 * time.Second),
		Restart:      RestartAlways,
	}
	DefaultUpdate = Update{
		ConfirmWithin: configfile.Duration(10 * time.Minute),
		HealthyFor:    configfile.Duration(2 * time.Minute),
		KeysDir:       "/etc/fieldgate/keys",
		BootAttempts:  3,
	}
	DefaultConfig = Config{
		Version: Version,
		Gateway: DefaultGateway,
		Runtime: DefaultRuntime,
		MQTT:    DefaultMQTT,
		Update:  DefaultUpdate,
	}
)

// Config is a loaded, validated gateway.yaml.
type Config struct {
	Version    int         `yaml:"version"`
	Gateway    Gateway     `yaml:"gateway"`
	Runtime    Runtime     `yaml:"runtime"`
	MQTT       MQTT        `yaml:"mqtt"`
	Collectors []Collector `yaml:"collectors"`
	Update     Update      `yaml:"update"`

	// Path is the file the config was loaded from.
	Path string `yaml:"-"`
}

// Gateway is the `gateway:` section.
type Gateway struct {
	// ID names the gateway in MQTT topics; [A-Za-z0-9_-]+; default the host name.
	ID string `yaml:"id"`
	// DataDir holds collector data, configs and logs; default /var/lib/fieldgate.
	DataDir string `yaml:"data_dir"`
	// Listen is the HTTP address of /healthz /status /metrics; default 127.0.0.1:9273.
	Listen string `yaml:"listen"`

	Pos configfile.Pos `yaml:"-"`
}

// Runtime is the `runtime:` section (containerd).
type Runtime struct {
	// Address is containerd's socket; default /run/containerd/containerd.sock.
	Address string `yaml:"address"`
	// Namespace is the containerd namespace; default fieldgate.
	Namespace string `yaml:"namespace"`
	// ImagesDir holds OCI archives imported at start; default {data_dir}/images.
	ImagesDir string `yaml:"images_dir"`
	// Snapshotter is the containerd snapshotter; default overlayfs ("native"
	// where the file system cannot do overlays).
	Snapshotter string `yaml:"snapshotter"`

	Pos configfile.Pos `yaml:"-"`
}

// MQTT is the `mqtt:` section: the broker the collectors (and the gateway
// status) publish to.
type MQTT struct {
	Broker       string `yaml:"broker"`
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	TLS          TLS    `yaml:"tls"`
	// TopicPrefix is the topic root; default fieldgate.
	TopicPrefix string `yaml:"topic_prefix"`
	// Payload and the Sparkplug settings, gateway-wide; a collector's own
	// mqtt: section overrides them.
	Output `yaml:",inline"`

	Pos configfile.Pos `yaml:"-"`
}

// MQTT payload formats.
const (
	PayloadFieldgate = "fieldgate"
	PayloadSparkplug = "sparkplug"
)

// Output is how a collector publishes: `payload` and, with sparkplug,
// `group_id`, `primary_host_id` and `aliases`. Passed to the collector as
// MQTT_PAYLOAD and SPARKPLUG_*.
type Output struct {
	// Payload is fieldgate (the JSON contract, default) or sparkplug
	// (Sparkplug B 3.0: each collector an edge node {gateway}-{collector}).
	Payload string `yaml:"payload"`
	// GroupID is the Sparkplug group; default the gateway id.
	GroupID string `yaml:"group_id"`
	// PrimaryHostID holds births until spBv1.0/STATE/{id} says online.
	PrimaryHostID string `yaml:"primary_host_id"`
	// Aliases makes DDATA carry metric aliases instead of names.
	Aliases *bool `yaml:"aliases"`
}

// sparkplugKeys reports whether any Sparkplug setting is written.
func (o Output) sparkplugKeys() bool {
	return o.GroupID != "" || o.PrimaryHostID != "" || o.Aliases != nil
}

// merge returns o with every key it leaves unset taken from def.
func (o Output) merge(def Output) Output {
	if o.Payload == "" {
		o.Payload = def.Payload
	}
	if o.GroupID == "" {
		o.GroupID = def.GroupID
	}
	if o.PrimaryHostID == "" {
		o.PrimaryHostID = def.PrimaryHostID
	}
	if o.Aliases == nil {
		o.Aliases = def.Aliases
	}
	return o
}

// Output returns collector c's effective output: its own mqtt: keys, then
// the gateway's.
func (c *Config) Output(col *Collector) Output {
	own := Output{}
	if col.MQTT != nil {
		own = *col.MQTT
	}
	out := own.merge(c.MQTT.Output)
	if out.Payload == "" {
		out.Payload = PayloadFieldgate
	}
	return out
}

// Env returns the MQTT_PAYLOAD and SPARKPLUG_* variables of an effective
// output; nothing for the default JSON payload, so existing collectors
// keep their spec.
func (o Output) Env() map[string]string {
	env := map[string]string{}
	if o.Payload != PayloadSparkplug {
		return env
	}
	env["MQTT_PAYLOAD"] = PayloadSparkplug
	if o.GroupID != "" {
		env["SPARKPLUG_GROUP_ID"] = o.GroupID
	}
	if o.PrimaryHostID != "" {
		env["SPARKPLUG_PRIMARY_HOST_ID"] = o.PrimaryHostID
	}
	if o.Aliases != nil && *o.Aliases {
		env["SPARKPLUG_ALIASES"] = "true"
	}
	return env
}

// TLS holds the broker's CA and the client certificate (mTLS) files.
type TLS struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`

	Pos configfile.Pos `yaml:"-"`
}

// Collector is one entry of `collectors:`, run as one container.
type Collector struct {
	// Name is the container id and the collector name in topics.
	Name  string `yaml:"name"`
	Image string `yaml:"image"`
	// PollInterval is passed as POLL_INTERVAL; default 5s.
	PollInterval configfile.Duration `yaml:"poll_interval"`
	Privileged   bool                `yaml:"privileged"`
	// Devices are HOST[:CONTAINER] paths made available inside the container.
	Devices []string `yaml:"devices"`
	// Restart is always (default), on-failure, unless-stopped or never.
	Restart   string    `yaml:"restart"`
	Resources Resources `yaml:"resources"`
	// Queue sets the collector's durable outbound queue (QUEUE_* env).
	Queue Queue `yaml:"queue"`
	// MQTT overrides the gateway's payload and Sparkplug settings.
	MQTT *Output           `yaml:"mqtt"`
	Env  map[string]string `yaml:"env"`

	// Modbus and OPCUA are the protocol sections, kept as YAML; exactly one is set.
	Modbus *Section `yaml:"modbus"`
	OPCUA  *Section `yaml:"opcua"`

	// Protocol is "modbus" or "opcua", whichever section is set.
	Protocol string `yaml:"-"`
	// ProtocolConfig is the protocol section as a YAML document: the content
	// of the collector's COLLECTOR_CONFIG file, with the paths of
	// SecretFiles replaced by their container paths.
	ProtocolConfig []byte `yaml:"-"`
	// SecretFiles are the host files the protocol section names, mounted
	// read-only into the container.
	SecretFiles []SecretFile `yaml:"-"`

	Pos configfile.Pos `yaml:"-"`
}

// Section is a protocol section kept as parsed YAML: the collector's own
// parser validates it, and the supervisor writes it out as the collector's file
// (Collector.ProtocolConfig). Parse empties Node once the config is
// validated; the section's presence is what remains.
type Section struct {
	Node yaml.Node
}

// UnmarshalYAML keeps the node as it is.
func (s *Section) UnmarshalYAML(n *yaml.Node) error {
	s.Node = *n
	return nil
}

// Device is a parsed `devices` entry.
type Device struct {
	Host, Container string
}

// ParseDevice parses a `devices` entry, HOST[:CONTAINER], both absolute
// paths; CONTAINER defaults to HOST. It splits at the last ":/", so a host
// path holding colons works: udev's by-path names do
// (/dev/serial/by-path/pci-0000:00:14.0-usb-0:1:1.0-port0:/dev/ttyUSB0). It is
// the one parser of this form: validate and the supervisor both use it.
func ParseDevice(s string) (Device, error) {
	d := Device{Host: s, Container: s}
	if i := strings.LastIndex(s, ":/"); i > 0 {
		d = Device{Host: s[:i], Container: s[i+1:]}
	}
	switch {
	case strings.HasSuffix(s, ":"):
		return Device{}, fmt.Errorf("device %q: empty container path (want HOST[:CONTAINER], absolute paths)", s)
	case !filepath.IsAbs(d.Host) || !filepath.IsAbs(d.Container):
		return Device{}, fmt.Errorf("device %q: want HOST[:CONTAINER], absolute paths", s)
	}
	return d, nil
}

// ParsedDevices returns the collector's `devices` entries parsed; entries
// that do not parse are left out (a loaded config has none: Load rejects
// them).
func (c *Collector) ParsedDevices() []Device {
	out := make([]Device, 0, len(c.Devices))
	for _, raw := range c.Devices {
		if d, err := ParseDevice(raw); err == nil {
			out = append(out, d)
		}
	}
	return out
}

// CollectorDir is the host directory of the collector's files:
// {data_dir}/collectors/{name}.
func (c *Config) CollectorDir(name string) string {
	return filepath.Join(c.Gateway.DataDir, "collectors", name)
}

// Resources are a collector's cpu and memory limits; zero means unlimited.
type Resources struct {
	// CPUs is a share of CPUs (0.5 = half a core).
	CPUs float64 `yaml:"cpus"`
	// Memory is a byte size: 64MiB, 128M, 1GiB, 1048576 (see ParseByteSize).
	Memory string `yaml:"memory"`
	// MemoryBytes is Memory parsed.
	MemoryBytes int64 `yaml:"-"`

	Pos configfile.Pos `yaml:"-"`
}

// Queue is a collector's durable outbound queue; unset keys keep the
// collector's defaults (256MiB, no age limit, sync 1s, drop_oldest).
type Queue struct {
	// MaxBytes bounds the queue: 256MiB, 1GiB, 500MB… (see ParseByteSize).
	MaxBytes string `yaml:"max_bytes"`
	// MaxAge drops (and counts) batches older than this; 0 keeps them.
	MaxAge configfile.Duration `yaml:"max_age"`
	// Sync is "always" (fsync every batch) or the longest wait for fsync.
	Sync string `yaml:"sync"`
	// Policy applies when full: drop_oldest or reject_new.
	Policy string `yaml:"policy"`
	// MaxBytesValue is MaxBytes parsed.
	MaxBytesValue int64 `yaml:"-"`

	Pos configfile.Pos `yaml:"-"`
}

// QueuePolicies are the valid queue.policy values.
var QueuePolicies = []string{"drop_oldest", "reject_new"}

// Env returns the QUEUE_* variables for the settings that are set.
func (q Queue) Env() map[string]string {
	env := map[string]string{}
	if q.MaxBytesValue > 0 {
		env["QUEUE_MAX_BYTES"] = fmt.Sprint(q.MaxBytesValue)
	}
	if q.MaxAge > 0 {
		env["QUEUE_MAX_AGE"] = q.MaxAge.String()
	}
	if q.Sync != "" {
		env["QUEUE_SYNC"] = q.Sync
	}
	if q.Policy != "" {
		env["QUEUE_POLICY"] = q.Policy
	}
	return env
}

// Option changes how a config is loaded.
type Option func(*loader)

// WithStat replaces os.Stat for the device existence checks (tests).
func WithStat(stat func(string) (os.FileInfo, error)) Option {
	return func(l *loader) { l.stat = stat }
}

// WithHostname replaces os.Hostname for the gateway.id default (tests).
func WithHostname(hostname func() (string, error)) Option {
	return func(l *loader) { l.hostname = hostname }
}

type loader struct {
	stat     func(string) (os.FileInfo, error)
	hostname func() (string, error)
}

// Load reads and validates the gateway.yaml at path. Problems are returned
// together as a *configfile.Errors.
func Load(path string, opts ...Option) (*Config, error) {
	data, err := configfile.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read gateway config: %w", err)
	}
	return Parse(path, data, opts...)
}

// Parse validates data as the gateway.yaml named path (path is used in error
// messages and to resolve nothing else).
func Parse(path string, data []byte, opts ...Option) (*Config, error) {
	l := loader{stat: os.Stat, hostname: os.Hostname}
	for _, o := range opts {
		o(&l)
	}
	cfg := DefaultConfig
	cfg.Version = 0 // required: an absent version is an error, not version 1
	cfg.Path = path
	// Size, syntax and alias expansion first: past any of these, nothing
	// else in the file is worth reading.
	root, err := configfile.Parse(path, data)
	if err != nil {
		return nil, err
	}
	errs := configfile.NewErrors(path)
	if err := configfile.Decode(path, data, &cfg); err != nil {
		var ce *configfile.Errors
		if !errors.As(err, &ce) {
			return nil, err
		}
		errs.List = append(errs.List, ce.List...)
	}
	v := validator{loader: l, cfg: &cfg, errs: errs, doc: document{root}, path: path, data: data}
	v.defaults()
	v.validate()
	if err := errs.Err(); err != nil {
		return nil, err
	}
	// The sections' node trees were for validation; what the collectors get
	// is ProtocolConfig. A collector of 10,000 OPC UA nodes would otherwise
	// keep ~10 MB of tree in the supervisor for as long as the config holds.
	for i := range cfg.Collectors {
		for _, s := range []*Section{cfg.Collectors[i].Modbus, cfg.Collectors[i].OPCUA} {
			if s != nil {
				s.Node = yaml.Node{}
			}
		}
	}
	return &cfg, nil
}
