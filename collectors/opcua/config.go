// Package opcua is the OPC UA collector: it subscribes to (or polls) the
// variables of one OPC UA server and hands their values, grouped by device,
// to a Sink (the MQTT publisher) as reading batches.
//
// The configuration is the `opcua:` section of gateway.yaml (DESIGN.md); see
// Config for every key and its default.
//
// Subscribe mode (default) creates monitored items (sampling interval
// POLL_INTERVAL, optional deadband) in requests bounded by the server's
// MaxMonitoredItemsPerCall, spread over subscriptions of at most 1000 items
// that keep whole devices together, and publishes one batch per device per
// publishing cycle. Poll mode reads every POLL_INTERVAL in requests bounded
// by MaxNodesPerRead.
//
// Security: without a `security` section the most secure SignAndEncrypt
// endpoint among the supported policies is used; None only when written.
// The client certificate is generated once into DATA_DIR/pki/own unless
// configured; server certificates must be in the trust directory
// (DATA_DIR/pki/trusted), and an untrusted one is saved into
// DATA_DIR/pki/rejected with an error saying which and where to move it.
//
// Recovery: a lost connection, session or subscription (no response, not
// even a keep-alive, within the keep-alive period) ends the session; every
// tag is then reported bad with the reason, and the engine reconnects with
// capped exponential back-off and recreates every monitored item. Items the
// server rejects are reported bad alone and retried every 30 s.
package opcua

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gopcua/opcua/ua"
	"gopkg.in/yaml.v3"

	"fieldgate/collectors/command"
	"fieldgate/collectors/configfile"
	"fieldgate/collectors/reading"
)

// Collection modes.
const (
	ModeSubscribe = "subscribe"
	ModePoll      = "poll"
)

// Security policy names accepted in `security.policy`.
const (
	PolicyNone                = "None"
	PolicyBasic256Sha256      = "Basic256Sha256"
	PolicyAes128Sha256RsaOaep = "Aes128_Sha256_RsaOaep"
	PolicyAes256Sha256RsaPss  = "Aes256_Sha256_RsaPss"
)

// Message security mode names accepted in `security.mode`.
const (
	SecModeNone           = "None"
	SecModeSign           = "Sign"
	SecModeSignAndEncrypt = "SignAndEncrypt"
)

// Deadband types accepted in `nodes[].deadband.type`.
const (
	DeadbandAbsolute = "absolute"
	DeadbandPercent  = "percent"
)

var (
	validModes     = []string{ModeSubscribe, ModePoll}
	validPolicies  = []string{PolicyNone, PolicyBasic256Sha256, PolicyAes128Sha256RsaOaep, PolicyAes256Sha256RsaPss}
	validSecModes  = []string{SecModeNone, SecModeSign, SecModeSignAndEncrypt}
	validDeadbands = []string{DeadbandAbsolute, DeadbandPercent}
)

// Config is the collector's file: the content of gateway.yaml's `opcua:`
// section (a file wrapped in a single `opcua:` key is accepted too).
type Config struct {
	Pos configfile.Pos `yaml:"-"`

	// Endpoint is the server's URL, opc.tcp://HOST:PORT[/path]. Required.
	Endpoint string `yaml:"endpoint"`
	// Mode is subscribe (default: monitored items, the server reports changes)
	// or poll (a batched Read every POLL_INTERVAL).
	Mode string `yaml:"mode"`
	// PublishingInterval is the subscription's publishing interval; default
	// the collector's POLL_INTERVAL. The sampling interval of every item is
	// POLL_INTERVAL unless the node sets its own.
	PublishingInterval configfile.Duration `yaml:"publishing_interval"`
	// QueueSize is the server-side queue of each monitored item; default 1
	// (the latest value per publishing cycle).
	QueueSize uint32 `yaml:"queue_size"`
	// Security selects the endpoint. Absent: the most secure SignAndEncrypt
	// endpoint the server offers among the supported policies; security None
	// is only used when written here explicitly.
	Security *Security `yaml:"security"`
	// TrustDir holds the trusted server certificates (DER or PEM, any file
	// name); default DATA_DIR/pki/trusted. Rejected certificates are saved
	// in DATA_DIR/pki/rejected.
	TrustDir string `yaml:"trust_dir"`
	// Auth is the user identity: anonymous (default), user name and password
	// file, or an X.509 certificate.
	Auth *Auth `yaml:"auth"`
	// Nodes are the variables to collect.
	Nodes []Node `yaml:"nodes"`
	// Limits bound what the server can make the collector hold; zero
	// fields take DefaultLimits.
	Limits Limits `yaml:"limits"`
	// Devices sets report by exception per device (the default of its
	// nodes): publish, deadband, heartbeat.
	Devices []DeviceReport `yaml:"devices"`

	// lines maps keys ("mode", "security.policy") to their line in the
	// file, so errors point at the key rather than its mapping.
	lines map[string]int
}

// at is the position of key in the file, or of fallback's mapping.
func (c *Config) at(key string, fallback configfile.Pos) configfile.Pos {
	if l := c.lines[key]; l > 0 {
		return configfile.Pos{Line: l}
	}
	return fallback
}

// keyLines records the line of every key of the top-level mapping (after
// unwrapping `opcua:`) and of the security and auth mappings.
func keyLines(doc *yaml.Node) map[string]int {
	if len(doc.Content) == 0 {
		return nil
	}
	root := doc.Content[0]
	if root.Kind == yaml.MappingNode && len(root.Content) == 2 && root.Content[0].Value == "opcua" {
		root = root.Content[1]
	}
	out := map[string]int{}
	var walk func(n *yaml.Node, prefix string, depth int)
	walk = func(n *yaml.Node, prefix string, depth int) {
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := prefix + n.Content[i].Value
			out[k] = n.Content[i].Line
			if depth == 0 && (k == "security" || k == "auth" || k == "limits") {
				walk(n.Content[i+1], k+".", 1)
			}
		}
	}
	walk(root, "", 0)
	return out
}

// Security is the secure channel configuration.
type Security struct {
	Pos configfile.Pos `yaml:"-"`
	// Policy: None, Basic256Sha256, Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss.
	Policy string `yaml:"policy"`
	// Mode: None, Sign, SignAndEncrypt.
	Mode string `yaml:"mode"`
	// CertFile, KeyFile are the client's application instance certificate
	// and RSA key (PEM or DER). When absent, a certificate is generated once
	// and kept in DATA_DIR/pki/own.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerCert pins the server certificate (PEM or DER) in addition to the
	// trust directory.
	ServerCert string `yaml:"server_cert"`
}

// Auth is the user identity token. In YAML it is either the word
// `anonymous` or a mapping {username, password_file} | {cert_file, key_file}
// | {anonymous: true}.
type Auth struct {
	Pos          configfile.Pos
	Anonymous    bool
	Username     string
	PasswordFile string
	CertFile     string
	KeyFile      string
	// AllowPlaintextPassword (`allow_plaintext_password: true`) accepts a
	// user name and password sent unencrypted: over security policy None,
	// or to an endpoint whose user token policy is None without
	// SignAndEncrypt. Default false: such a configuration is refused.
	AllowPlaintextPassword bool
}

// UnmarshalYAML decodes `anonymous` or a mapping of the known keys,
// rejecting unknown ones.
func (a *Auth) UnmarshalYAML(n *yaml.Node) error {
	a.Pos = configfile.Pos{Line: n.Line, Column: n.Column}
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Value != "anonymous" {
			return fmt.Errorf("unknown value %q (valid: anonymous, or a mapping with username and password_file, or cert_file and key_file)", n.Value)
		}
		a.Anonymous = true
		return nil
	case yaml.MappingNode:
	default:
		return fmt.Errorf("want anonymous or a mapping")
	}
	fields := map[string]*string{
		"username": &a.Username, "password_file": &a.PasswordFile,
		"cert_file": &a.CertFile, "key_file": &a.KeyFile,
	}
	bools := map[string]*bool{"anonymous": &a.Anonymous, "allow_plaintext_password": &a.AllowPlaintextPassword}
	var errs []string
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if seen[k.Value] {
			errs = append(errs, fmt.Sprintf("duplicate key %q (line %d)", k.Value, k.Line))
			continue
		}
		seen[k.Value] = true
		if b, ok := bools[k.Value]; ok {
			if v.Kind != yaml.ScalarNode || v.Decode(b) != nil {
				errs = append(errs, fmt.Sprintf("%s: want true or false, got %q", k.Value, v.Value))
			}
			continue
		}
		p, ok := fields[k.Value]
		if !ok {
			errs = append(errs, fmt.Sprintf("unknown key %q (valid: allow_plaintext_password, anonymous, cert_file, key_file, password_file, username)", k.Value))
			continue
		}
		if v.Kind != yaml.ScalarNode {
			errs = append(errs, fmt.Sprintf("%s: want a string", k.Value))
			continue
		}
		*p = v.Value
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// kind names the token type the auth section selects.
func (a *Auth) kind() ua.UserTokenType {
	switch {
	case a == nil || a.Anonymous:
		return ua.UserTokenTypeAnonymous
	case a.Username != "":
		return ua.UserTokenTypeUserName
	case a.CertFile != "" || a.KeyFile != "":
		return ua.UserTokenTypeCertificate
	}
	return ua.UserTokenTypeAnonymous
}

// Node is one variable to collect: a tag of a device.
type Node struct {
	Pos configfile.Pos `yaml:"-"`
	// Device groups tags into one reading batch (one MQTT message). Required.
	Device string `yaml:"device"`
	// Name is the tag name, unique within its device. Required.
	Name string `yaml:"name"`
	// NodeID in OPC UA string syntax, e.g. "ns=2;s=Boiler1.Temperature". Required.
	NodeID string `yaml:"node_id"`
	// Unit is copied into each reading.
	Unit string `yaml:"unit"`
	// Deadband filters changes smaller than the value (subscribe mode only).
	Deadband *Deadband `yaml:"deadband"`
	// SamplingInterval overrides POLL_INTERVAL for this item (subscribe mode).
	SamplingInterval configfile.Duration `yaml:"sampling_interval"`
	// Publish is always (poll mode's default) or on_change (what subscribe
	// mode does anyway); Heartbeat republishes an unchanged value.
	Publish   string              `yaml:"publish"`
	Heartbeat configfile.Duration `yaml:"heartbeat"`
	// Limits: writable, min, max (write commands).
	Limits command.Limits `yaml:",inline"`
}

// Deadband is a data change filter: absolute (in the value's unit) or
// percent. Written as {type: absolute|percent, value: x} or, as every
// collector writes it, {absolute: x} or {percent: p}. In subscribe mode the
// server applies it (percent of the variable's EURange, which the server
// must expose); in poll mode with publish: on_change the collector does
// (percent of the node's max - min).
type Deadband struct {
	Pos      configfile.Pos `yaml:"-"`
	Type     string         `yaml:"type"`
	Value    float64        `yaml:"value"`
	Absolute *float64       `yaml:"absolute"`
	Percent  *float64       `yaml:"percent"`
}

// LoadFile reads and validates the collector file at path.
func LoadFile(path string) (Config, error) {
	data, err := configfile.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read opcua config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes and validates a collector file. Every problem is reported as
// "FILE:LINE: message" in one *configfile.Errors.
func Parse(path string, data []byte) (Config, error) {
	doc, err := configfile.Parse(path, data)
	if err != nil {
		return Config{}, err
	}
	c := Config{lines: keyLines(doc)}
	if err := configfile.Decode(path, data, &c, configfile.Unwrap("opcua")); err != nil {
		errs := configfile.NewErrors(path)
		errs.Merge(configfile.Pos{}, err)
		// Report validation problems along with decoding ones, so one run
		// shows everything, unless the YAML itself is broken: then the
		// half-read content would only add noise.
		for _, e := range errs.List {
			if strings.HasPrefix(e.Msg, "invalid YAML") {
				return c, errs.Err()
			}
		}
		c.validate(errs, true)
		return c, errs.Err()
	}
	errs := configfile.NewErrors(path)
	c.validate(errs, true)
	return c, errs.Err()
}

// Validate checks a Config built in code (the same checks Parse applies).
func (c *Config) Validate() error {
	errs := configfile.NewErrors("opcua")
	c.validate(errs, true)
	return errs.Err()
}

func oneOf(v string, valid []string) bool {
	for _, s := range valid {
		if v == s {
			return true
		}
	}
	return false
}

func (c *Config) validate(errs *configfile.Errors, needNodes bool) {
	switch {
	case c.Endpoint == "":
		errs.Add(c.at("endpoint", c.Pos), "endpoint: missing (e.g. opc.tcp://10.0.0.5:4840)")
	case !strings.HasPrefix(c.Endpoint, "opc.tcp://"):
		errs.Add(c.at("endpoint", c.Pos), "endpoint: %q is not an opc.tcp:// URL", c.Endpoint)
	}
	if c.Mode != "" && !oneOf(c.Mode, validModes) {
		errs.Add(c.at("mode", c.Pos), "mode: unknown mode %q (valid: %s)", c.Mode, strings.Join(validModes, ", "))
	}
	if c.PublishingInterval < 0 {
		errs.Add(c.at("publishing_interval", c.Pos), "publishing_interval: must not be negative, got %s", c.PublishingInterval)
	}
	if s := c.Security; s != nil {
		policyOK := oneOf(s.Policy, validPolicies)
		modeOK := oneOf(s.Mode, validSecModes)
		switch {
		case s.Policy == "":
			errs.Add(c.at("security", s.Pos), "security.policy: missing (valid: %s)", strings.Join(validPolicies, ", "))
		case !policyOK:
			errs.Add(c.at("security.policy", s.Pos), "security.policy: unknown policy %q (valid: %s)", s.Policy, strings.Join(validPolicies, ", "))
		}
		switch {
		case s.Mode == "":
			errs.Add(c.at("security", s.Pos), "security.mode: missing (valid: %s)", strings.Join(validSecModes, ", "))
		case !modeOK:
			errs.Add(c.at("security.mode", s.Pos), "security.mode: unknown mode %q (valid: %s)", s.Mode, strings.Join(validSecModes, ", "))
		}
		if policyOK && modeOK {
			if (s.Policy == PolicyNone) != (s.Mode == SecModeNone) {
				errs.Add(c.at("security.mode", s.Pos), "security: policy %s cannot be used with mode %s (policy None goes with mode None only)", s.Policy, s.Mode)
			}
		}
		if (s.CertFile == "") != (s.KeyFile == "") {
			errs.Add(s.Pos, "security: cert_file and key_file go together (leave both out to use a generated certificate)")
		}
	}
	if a := c.Auth; a != nil {
		n := 0
		if a.Anonymous {
			n++
		}
		if a.Username != "" || a.PasswordFile != "" {
			n++
			if a.Username == "" {
				errs.Add(a.Pos, "auth: password_file needs a username")
			}
			if a.PasswordFile == "" {
				errs.Add(a.Pos, "auth: username %q needs a password_file", a.Username)
			}
			if c.Security != nil && c.Security.Policy == PolicyNone && !a.AllowPlaintextPassword {
				errs.Add(a.Pos, "auth: the password of user %q would travel in clear over security policy None; choose a secured policy (e.g. security: {policy: Basic256Sha256, mode: SignAndEncrypt}) or write allow_plaintext_password: true", a.Username)
			}
		}
		if a.CertFile != "" || a.KeyFile != "" {
			n++
			if a.CertFile == "" || a.KeyFile == "" {
				errs.Add(a.Pos, "auth: certificate authentication needs both cert_file and key_file")
			}
			if c.Security != nil && c.Security.Policy == PolicyNone {
				errs.Add(a.Pos, "auth: certificate authentication needs a security policy other than None (the token is signed with the policy's algorithms)")
			}
		}
		if n > 1 {
			errs.Add(a.Pos, "auth: choose one of anonymous, username + password_file, cert_file + key_file")
		}
	}
	c.Limits.validate(errs, c)
	if needNodes && len(c.Nodes) == 0 {
		errs.Add(c.at("nodes", c.Pos), "nodes: at least one node is required")
	}
	seen := map[string]int{}
	for i := range c.Nodes {
		n := &c.Nodes[i]
		switch err := reading.CheckDeviceName(n.Device); {
		case n.Device == "":
			errs.Add(n.Pos, "nodes[%d]: device: missing", i)
		case err != nil:
			errs.Add(n.Pos, "nodes[%d]: device: %v", i, err)
		}
		switch err := reading.CheckTagName(n.Name); {
		case n.Name == "":
			errs.Add(n.Pos, "nodes[%d]: name: missing", i)
		case err != nil:
			errs.Add(n.Pos, "nodes[%d]: name: %v", i, err)
		}
		switch {
		case n.NodeID == "":
			errs.Add(n.Pos, "nodes[%d]: node_id: missing (e.g. \"ns=2;s=Boiler1.Temperature\")", i)
		default:
			if _, err := ua.ParseNodeID(n.NodeID); err != nil {
				errs.Add(n.Pos, "nodes[%d]: node_id: invalid node id %q: %v", i, n.NodeID, err)
			}
		}
		if n.Device != "" && n.Name != "" {
			key := n.Device + "\x00" + n.Name
			if line, dup := seen[key]; dup {
				errs.Add(n.Pos, "nodes[%d]: duplicate tag %q of device %q (first defined at line %d)", i, n.Name, n.Device, line)
			} else {
				seen[key] = n.Pos.Line
			}
		}
		if d := n.Deadband; d != nil && d.normalize(errs, fmt.Sprintf("nodes[%d]", i)) {
			switch {
			case !oneOf(d.Type, validDeadbands):
				errs.Add(d.Pos, "nodes[%d]: deadband.type: unknown type %q (valid: %s)", i, d.Type, strings.Join(validDeadbands, ", "))
			case d.Value < 0:
				errs.Add(d.Pos, "nodes[%d]: deadband.value: must not be negative, got %g", i, d.Value)
			case d.Type == DeadbandPercent && d.Value > 100:
				errs.Add(d.Pos, "nodes[%d]: deadband.value: a percent deadband is at most 100, got %g", i, d.Value)
			}
		}
		if n.SamplingInterval < 0 {
			errs.Add(n.Pos, "nodes[%d]: sampling_interval: must not be negative, got %s", i, n.SamplingInterval)
		}
	}
	c.validateReport(errs)
}

// withDefaults returns the config with defaults filled in for the given
// poll interval.
func (c Config) withDefaults(poll time.Duration) Config {
	if c.Mode == "" {
		c.Mode = ModeSubscribe
	}
	if c.PublishingInterval == 0 {
		c.PublishingInterval = configfile.Duration(poll)
	}
	if c.QueueSize == 0 {
		c.QueueSize = 1
	}
	return c
}

// FileRef is a file or directory the collector reads at the path its file
// names: a secret (password, private key), a certificate or the trust
// directory. The supervisor mounts each read-only into the container.
type FileRef struct {
	// Key is its place in the file: "security.cert_file", "trust_dir",
	// "auth.password_file", ...
	Key string
	// Path is the path as written.
	Path string
	// Dir is true for the trust directory.
	Dir bool
}

// Files lists the files and directories c names, in a fixed order.
func (c *Config) Files() []FileRef {
	var out []FileRef
	add := func(key, path string, dir bool) {
		if path != "" {
			out = append(out, FileRef{Key: key, Path: path, Dir: dir})
		}
	}
	if s := c.Security; s != nil {
		add("security.cert_file", s.CertFile, false)
		add("security.key_file", s.KeyFile, false)
		add("security.server_cert", s.ServerCert, false)
	}
	add("trust_dir", c.TrustDir, true)
	if a := c.Auth; a != nil {
		add("auth.password_file", a.PasswordFile, false)
		add("auth.cert_file", a.CertFile, false)
		add("auth.key_file", a.KeyFile, false)
	}
	return out
}
