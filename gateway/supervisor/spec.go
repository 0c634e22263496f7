package supervisor

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sort"
	"strings"

	"fieldgate/gateway/config"
)

// Container paths of the runtime contract.
const (
	// ContainerConfigPath is where the collector's protocol section is mounted (read-only).
	ContainerConfigPath = "/etc/fieldgate/collector.yaml"
	// ContainerDataDir is the collector's DATA_DIR inside its container.
	ContainerDataDir = "/var/lib/fieldgate"
	// containerSecretsDir holds the broker credential files, mounted read-only.
	containerSecretsDir = "/etc/fieldgate/mqtt"
)

// Labels set on every container the supervisor creates.
const (
	LabelManaged  = "fieldgate.managed"   // "true"
	LabelSpecHash = "fieldgate.spec-hash" // Spec.Hash()
)

// Mount is a bind mount of a host path into the container.
type Mount struct {
	Source      string `json:"source"`
	Destination string `json:"destination"`
	ReadOnly    bool   `json:"read_only"`
}

// Spec is a collector's effective container spec: everything that, when it
// changes, requires the container to be recreated. Its Hash labels the
// container (LabelSpecHash). The restart policy is not part of it: changing
// the policy does not restart anything.
type Spec struct {
	Name  string `json:"name"`
	Image string `json:"image"`
	// Env is KEY=VALUE, sorted by key.
	Env []string `json:"env"`
	// ConfigFile is the host path of the collector's file (mounted read-only
	// at ContainerConfigPath; ConfigFilePath) and Config its content, written
	// by the supervisor before the container is created.
	ConfigFile string `json:"config_file"`
	Config     []byte `json:"config"`
	// DataDir is the host directory bind-mounted read-write at ContainerDataDir.
	DataDir string `json:"data_dir"`
	// LogPath is the host file of the task's stdout and stderr (rotated
	// next to it): {data_dir}/logs/{name}/collector.log (LogPath).
	LogPath string `json:"log_path"`
	// Mounts are every bind mount: the config file, the data dir, the
	// broker credential files and the files of the protocol section
	// (config.Collector.SecretFiles), all read-only but the data dir.
	Mounts     []Mount         `json:"mounts"`
	Devices    []config.Device `json:"devices"`
	Privileged bool            `json:"privileged"`
	CPUs       float64         `json:"cpus"`
	Memory     int64           `json:"memory"`
	// Identity is what the image tag, the secret files and the device paths
	// resolved to when the spec was last resolved (ResolveIdentity): part of
	// the hash, so a new digest, secret or device node recreates the container.
	Identity Identity          `json:"identity"`
	Labels   map[string]string `json:"-"`
}

// Hash is the hex SHA-256 of the spec's JSON form (map keys sorted by
// encoding/json, env sorted by BuildSpec): equal specs hash equally.
func (s *Spec) Hash() string {
	b, err := json.Marshal(s)
	if err != nil {
		// Every field is a plain value: Marshal cannot fail.
		panic(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// BuildSpec derives the effective spec of collector c of cfg (DESIGN.md
// "Collector environment" and "Runtime contract"). Env entries of the
// collector override the variables the supervisor sets.
func BuildSpec(cfg *config.Config, c *config.Collector) Spec {
	dir := cfg.CollectorDir(c.Name)
	env := map[string]string{
		"POLL_INTERVAL":     c.PollInterval.String(),
		"MQTT_BROKER":       cfg.MQTT.Broker,
		"MQTT_TOPIC_PREFIX": cfg.MQTT.TopicPrefix,
		"GATEWAY_ID":        cfg.Gateway.ID,
		"COLLECTOR_NAME":    c.Name,
		"COLLECTOR_CONFIG":  ContainerConfigPath,
		"DATA_DIR":          ContainerDataDir,
	}
	mounts := []Mount{
		{Source: ConfigFilePath(cfg, c.Name), Destination: ContainerConfigPath, ReadOnly: true},
		{Source: dir, Destination: ContainerDataDir},
	}
	if cfg.MQTT.Username != "" {
		env["MQTT_USERNAME"] = cfg.MQTT.Username
	}
	secret := func(envName, hostPath, name string) {
		if hostPath == "" {
			return
		}
		dst := containerSecretsDir + "/" + name
		env[envName] = dst
		mounts = append(mounts, Mount{Source: hostPath, Destination: dst, ReadOnly: true})
	}
	secret("MQTT_PASSWORD_FILE", cfg.MQTT.PasswordFile, "password")
	secret("MQTT_CA_FILE", cfg.MQTT.TLS.CAFile, "ca.pem")
	secret("MQTT_CERT_FILE", cfg.MQTT.TLS.CertFile, "cert.pem")
	secret("MQTT_KEY_FILE", cfg.MQTT.TLS.KeyFile, "key.pem")
	// The files the protocol section names (OPC UA keys, certificates,
	// password, trust directory): its collector file already names these
	// container paths.
	for _, f := range c.SecretFiles {
		mounts = append(mounts, Mount{Source: f.Host, Destination: f.Container, ReadOnly: true})
	}
	for k, v := range c.Queue.Env() {
		env[k] = v
	}
	for k, v := range cfg.Output(c).Env() {
		env[k] = v
	}
	for k, v := range c.Env {
		env[k] = v
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	envList := make([]string, 0, len(keys))
	for _, k := range keys {
		envList = append(envList, k+"="+env[k])
	}
	s := Spec{
		Name:       c.Name,
		Image:      c.Image,
		Env:        envList,
		ConfigFile: ConfigFilePath(cfg, c.Name),
		Config:     c.ProtocolConfig,
		DataDir:    dir,
		LogPath:    LogPath(cfg, c.Name),
		Mounts:     mounts,
		Devices:    c.ParsedDevices(),
		Privileged: c.Privileged,
		CPUs:       c.Resources.CPUs,
		Memory:     c.Resources.MemoryBytes,
	}
	s.Labels = map[string]string{LabelManaged: "true", LabelSpecHash: s.Hash()}
	return s
}

// WithIdentity returns s with identity id and its LabelSpecHash recomputed.
func (s Spec) WithIdentity(id Identity) Spec {
	s.Identity = id
	labels := make(map[string]string, len(s.Labels))
	for k, v := range s.Labels {
		labels[k] = v
	}
	labels[LabelManaged] = "true"
	labels[LabelSpecHash] = s.Hash()
	s.Labels = labels
	return s
}

// SecretMounts are the read-only mounts whose content is part of the
// collector's identity: every one but the collector's own config file (the
// spec carries that content already).
func (s *Spec) SecretMounts() []Mount {
	var out []Mount
	for _, m := range s.Mounts {
		if m.ReadOnly && m.Source != s.ConfigFile {
			out = append(out, m)
		}
	}
	return out
}

// EnvValue returns the value of env variable key in s ("" if unset).
func (s Spec) EnvValue(key string) string {
	for _, kv := range s.Env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}
