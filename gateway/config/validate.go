package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"fieldgate/collectors/configfile"
	"fieldgate/collectors/runenv"
)

var (
	gatewayIDRe = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	// collectorNameRe is containerd's identifier rule (the container id is the
	// name) without '.', which MQTT subscribers and file names handle badly.
	collectorNameRe = regexp.MustCompile(`^[A-Za-z0-9]+([_-][A-Za-z0-9]+)*$`)
	envNameRe       = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	namespaceRe     = regexp.MustCompile(`^[A-Za-z0-9]+([._-][A-Za-z0-9]+)*$`)
)

// maxNameLen bounds collector names (container ids, directory names, topic levels).
const maxNameLen = 63

// ProtocolParser validates a protocol section and lists the files it names.
// data is laid out so that line numbers are those of gateway.yaml (path);
// errors should be a *configfile.Errors for their lines to be kept.
type ProtocolParser func(path string, data []byte) ([]ProtocolFile, error)

// ProtocolFile is a host file or directory a protocol section names at Key
// (a dotted path within the section, "auth.password_file").
type ProtocolFile struct {
	Key  string
	Path string
	Dir  bool
}

type validator struct {
	loader
	cfg  *Config
	errs *configfile.Errors
	doc  document
	path string
	data []byte
}

func (v *validator) add(pos configfile.Pos, format string, args ...any) {
	v.errs.Add(pos, format, args...)
}

func (v *validator) defaults() {
	c := v.cfg
	if c.Gateway.ID == "" {
		if h, err := v.hostname(); err == nil {
			c.Gateway.ID = HostnameID(h)
		}
	}
	if c.Gateway.DataDir == "" {
		c.Gateway.DataDir = DefaultGateway.DataDir
	}
	if c.Gateway.Listen == "" {
		c.Gateway.Listen = DefaultGateway.Listen
	}
	if c.Runtime.Address == "" {
		c.Runtime.Address = DefaultRuntime.Address
	}
	if c.Runtime.Namespace == "" {
		c.Runtime.Namespace = DefaultRuntime.Namespace
	}
	if c.Runtime.Snapshotter == "" {
		c.Runtime.Snapshotter = DefaultRuntime.Snapshotter
	}
	if c.Runtime.ImagesDir == "" {
		c.Runtime.ImagesDir = filepath.Join(c.Gateway.DataDir, "images")
	}
	if c.MQTT.TopicPrefix == "" {
		c.MQTT.TopicPrefix = DefaultMQTT.TopicPrefix
	}
	for i := range c.Collectors {
		col := &c.Collectors[i]
		if col.PollInterval == 0 {
			col.PollInterval = DefaultCollector.PollInterval
		}
		if col.Restart == "" {
			col.Restart = DefaultCollector.Restart
		}
	}
}

// HostnameID turns a host name into a gateway id: its first label, with every
// character outside [A-Za-z0-9_-] replaced by '-'.
func HostnameID(h string) string {
	h, _, _ = strings.Cut(h, ".")
	b := []byte(h)
	for i, ch := range b {
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '_' || ch == '-') {
			b[i] = '-'
		}
	}
	return string(b)
}

func (v *validator) validate() {
	c := v.cfg
	d := v.doc
	switch {
	case !d.has("version"):
		v.add(d.pos(), "version is required (valid: %d)", Version)
	case d.tag("version") == "!!null":
		v.add(d.pos("version"), "version is required (valid: %d)", Version)
	case c.Version != Version && d.tag("version") == "!!int":
		v.add(d.pos("version"), "unsupported version %d (valid: %d)", c.Version, Version)
	}

	if !gatewayIDRe.MatchString(c.Gateway.ID) {
		v.add(d.pos("gateway", "id"), "invalid gateway.id %q (want [A-Za-z0-9_-]+)", c.Gateway.ID)
	}
	if !filepath.IsAbs(c.Gateway.DataDir) {
		v.add(d.pos("gateway", "data_dir"), "gateway.data_dir %q must be an absolute path", c.Gateway.DataDir)
	}
	if _, _, err := net.SplitHostPort(c.Gateway.Listen); err != nil {
		v.add(d.pos("gateway", "listen"), "invalid gateway.listen %q (want HOST:PORT, e.g. 127.0.0.1:9273)", c.Gateway.Listen)
	}
	if !namespaceRe.MatchString(c.Runtime.Namespace) {
		v.add(d.pos("runtime", "namespace"), "invalid runtime.namespace %q (want letters, digits and ._-)", c.Runtime.Namespace)
	}
	if d.has("runtime", "images_dir") && !filepath.IsAbs(c.Runtime.ImagesDir) {
		v.add(d.pos("runtime", "images_dir"), "runtime.images_dir %q must be an absolute path", c.Runtime.ImagesDir)
	}
	v.validateMQTT()
	validateUpdate(&c.Update, d, v.add)

	names := map[string]int{}          // name -> line
	claims := map[string]claimSource{} // host device -> first claimant
	for i := range c.Collectors {
		v.validateCollector(i, names, claims)
	}
}

func (v *validator) validateMQTT() {
	m := v.cfg.MQTT
	d := v.doc
	if m.Broker == "" {
		v.add(d.pos("mqtt"), "mqtt.broker is required (e.g. tcp://broker.local:1883)")
	} else if _, err := runenv.NormalizeBroker(m.Broker); err != nil {
		v.add(d.pos("mqtt", "broker"), "invalid mqtt.broker: %v", err)
	}
	if (m.TLS.CertFile == "") != (m.TLS.KeyFile == "") {
		v.add(d.pos("mqtt", "tls"), "mqtt.tls: cert_file and key_file go together (got only one)")
	}
	// The supervisor mounts these into every collector: they must be
	// there, as files.
	for _, f := range []struct {
		path string
		keys []any
	}{
		{m.PasswordFile, []any{"mqtt", "password_file"}},
		{m.TLS.CAFile, []any{"mqtt", "tls", "ca_file"}},
		{m.TLS.CertFile, []any{"mqtt", "tls", "cert_file"}},
		{m.TLS.KeyFile, []any{"mqtt", "tls", "key_file"}},
	} {
		if f.path == "" {
			continue
		}
		name := fmt.Sprint(f.keys[0])
		for _, k := range f.keys[1:] {
			name += "." + fmt.Sprint(k)
		}
		if msg := v.checkHostFile(f.path, false); msg != "" {
			v.add(d.pos(f.keys...), "%s: %q %s", name, f.path, msg)
		}
	}
	p := m.TopicPrefix
	if strings.ContainsAny(p, "+#") || strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") {
		v.add(d.pos("mqtt", "topic_prefix"), "invalid mqtt.topic_prefix %q (no +, #, leading or trailing /)", p)
	}
	v.validateOutput(m.Output, "mqtt", func(keys ...any) configfile.Pos { return d.pos(append([]any{"mqtt"}, keys...)...) })
	if m.Output.sparkplugKeys() && m.Output.Payload != PayloadSparkplug {
		used := false
		for i := range v.cfg.Collectors {
			used = used || v.cfg.Output(&v.cfg.Collectors[i]).Payload == PayloadSparkplug
		}
		if !used {
			v.add(d.pos("mqtt"), "mqtt: group_id, primary_host_id and aliases apply only with payload: sparkplug (no collector has it)")
		}
	}
}

// validateOutput checks a payload and the Sparkplug ids (gateway-wide at
// "mqtt", or a collector's own mqtt: section).
func (v *validator) validateOutput(o Output, where string, at func(keys ...any) configfile.Pos) {
	switch o.Payload {
	case "", PayloadFieldgate, PayloadSparkplug:
	default:
		v.add(at("payload"), "%s.payload: unknown payload %q (valid: %s, %s)", where, o.Payload, PayloadFieldgate, PayloadSparkplug)
	}
	for _, k := range []struct{ key, id string }{{"group_id", o.GroupID}, {"primary_host_id", o.PrimaryHostID}} {
		if k.id == "" {
			continue
		}
		if err := runenv.CheckSparkplugID(where+"."+k.key, k.id); err != nil {
			v.add(at(k.key), "%v", err)
		}
	}
}

type claimSource struct {
	collector string
	line      int
}

func (v *validator) validateCollector(i int, names map[string]int, claims map[string]claimSource) {
	c := &v.cfg.Collectors[i]
	d := v.doc
	at := func(keys ...any) configfile.Pos { return d.pos(append([]any{"collectors", i}, keys...)...) }
	label := c.Name
	who := fmt.Sprintf("collector %q", c.Name)
	if label == "" {
		label = fmt.Sprintf("#%d", i+1)
		who = "collector " + label
	}

	switch {
	case c.Name == "":
		v.add(at(), "%s: name is required", who)
	case len(c.Name) > maxNameLen || !collectorNameRe.MatchString(c.Name):
		v.add(at("name"), "invalid collector name %q (want letters and digits joined by single _ or -, at most %d characters)", c.Name, maxNameLen)
	default:
		if first, dup := names[c.Name]; dup {
			v.add(at("name"), "duplicate collector name %q (first at line %d)", c.Name, first)
		} else {
			names[c.Name] = at("name").Line
		}
	}
	if c.Image == "" {
		v.add(at(), "%s: image is required", who)
	}
	if c.PollInterval < 0 {
		v.add(at("poll_interval"), "%s: poll_interval must be positive", who)
	}
	if !validRestart(c.Restart) {
		v.add(at("restart"), "%s: unknown restart policy %q (valid: %s)", who, c.Restart, strings.Join(RestartPolicies, ", "))
	}
	if c.Resources.CPUs < 0 || (c.Resources.CPUs == 0 && d.has("collectors", i, "resources", "cpus")) {
		v.add(at("resources", "cpus"), "%s: resources.cpus must be > 0", who)
	}
	if c.Resources.Memory != "" {
		n, err := ParseByteSize(c.Resources.Memory)
		switch {
		case err != nil:
			v.add(at("resources", "memory"), "%s: resources.memory: %v", who, err)
		case n <= 0:
			v.add(at("resources", "memory"), "%s: resources.memory must be > 0", who)
		default:
			c.Resources.MemoryBytes = n
		}
	}
	if q := &c.Queue; q.MaxBytes != "" {
		n, err := ParseByteSize(q.MaxBytes)
		switch {
		case err != nil:
			v.add(at("queue", "max_bytes"), "%s: queue.max_bytes: %v", who, err)
		case n <= 0:
			v.add(at("queue", "max_bytes"), "%s: queue.max_bytes must be > 0", who)
		default:
			q.MaxBytesValue = n
		}
	}
	if c.Queue.MaxAge < 0 {
		v.add(at("queue", "max_age"), "%s: queue.max_age must not be negative", who)
	}
	if sync := c.Queue.Sync; sync != "" && sync != "always" {
		if d, err := time.ParseDuration(sync); err != nil || d <= 0 {
			v.add(at("queue", "sync"), "%s: queue.sync %q is neither \"always\" nor a positive duration such as 1s", who, sync)
		}
	}
	if p := c.Queue.Policy; p != "" && !slices.Contains(QueuePolicies, p) {
		v.add(at("queue", "policy"), "%s: unknown queue.policy %q (valid: %s)", who, p, strings.Join(QueuePolicies, ", "))
	}
	for k := range c.Env {
		if !envNameRe.MatchString(k) {
			v.add(at("env", k), "%s: invalid env name %q", who, k)
		}
	}
	if o := c.MQTT; o != nil {
		v.validateOutput(*o, who+": mqtt", func(keys ...any) configfile.Pos { return at(append([]any{"mqtt"}, keys...)...) })
		if o.sparkplugKeys() && v.cfg.Output(c).Payload != PayloadSparkplug {
			v.add(at("mqtt"), "%s: mqtt: group_id, primary_host_id and aliases apply only with payload: sparkplug", who)
		}
	}

	// Devices: host paths exist, and each has a single owner.
	own := map[string]bool{}
	claim := func(host string, pos configfile.Pos) {
		if own[host] {
			return
		}
		own[host] = true
		if first, taken := claims[host]; taken {
			v.add(pos, "%s: device %q is already claimed by collector %q (line %d): a serial device has one owner", who, host, first.collector, first.line)
			return
		}
		claims[host] = claimSource{collector: label, line: pos.Line}
	}
	for j, raw := range c.Devices {
		pos := at("devices", j)
		dev, err := ParseDevice(raw)
		if err != nil {
			v.add(pos, "%s: invalid device %q (want HOST[:CONTAINER], absolute paths)", who, raw)
			continue
		}
		if _, err := v.stat(dev.Host); err != nil {
			v.add(pos, "%s: device %q does not exist", who, dev.Host)
		}
		claim(dev.Host, pos)
	}

	v.validateProtocol(i, c, who, claim)
}

func validRestart(s string) bool {
	for _, p := range RestartPolicies {
		if s == p {
			return true
		}
	}
	return false
}

func (v *validator) validateProtocol(i int, c *Collector, who string, claim func(string, configfile.Pos)) {
	d := v.doc
	at := func(keys ...any) configfile.Pos { return d.pos(append([]any{"collectors", i}, keys...)...) }
	var present []string
	if c.Modbus != nil {
		present = append(present, ProtocolModbus)
	}
	if c.OPCUA != nil {
		present = append(present, ProtocolOPCUA)
	}
	switch len(present) {
	case 0:
		v.add(at(), "%s: a protocol section is required (valid: modbus, opcua)", who)
		return
	case 2:
		v.add(at(ProtocolOPCUA), "%s: exactly one protocol section allowed, got modbus and opcua", who)
		return
	}
	proto := present[0]
	c.Protocol = proto
	for _, want := range []string{ProtocolModbus, ProtocolOPCUA} {
		if strings.Contains(c.Image, "collector-"+want) && proto != want {
			v.add(at(proto), "%s: image %q needs the %s: section, not %s:", who, c.Image, want, proto)
		}
	}

	key, val := d.find("collectors", i, proto)
	if key == nil || val == nil {
		return
	}
	if val.Kind != yaml.MappingNode {
		v.add(at(proto), "%s: %s: must be a mapping of the collector's settings", who, proto)
		return
	}
	section := canonical(val)
	if parse := ProtocolParsers[proto]; parse != nil {
		files, err := parse(v.path, sectionBytes(v.data, key, val))
		v.secretFiles(c, who, proto, section, files, at)
		var ce *configfile.Errors
		switch {
		case err == nil:
		case errors.As(err, &ce):
			for _, e := range ce.List {
				e.File = v.path
				e.Msg = fmt.Sprintf("%s: %s: %s", who, proto, e.Msg)
				v.errs.List = append(v.errs.List, e)
			}
		default:
			v.add(at(proto), "%s: %s: %v", who, proto, err)
		}
	}
	out, err := yaml.Marshal(section)
	if err != nil {
		v.add(at(proto), "%s: %s: %v", who, proto, err)
		return
	}
	c.ProtocolConfig = out

	// The modbus serial line is a device claim too: its container path maps
	// back to a host path through devices, or is the host path itself
	// (privileged containers see the host's /dev).
	if proto == ProtocolModbus {
		if _, port := d.find("collectors", i, proto, "serial", "port"); port != nil && port.Kind == yaml.ScalarNode && port.Value != "" {
			host := port.Value
			for _, dev := range c.ParsedDevices() {
				if dev.Container == port.Value {
					host = dev.Host
				}
			}
			claim(host, configfile.Pos{Line: port.Line, Column: port.Column})
		}
	}
}

// canonical returns a copy of n without comments and with block-style
// collections, so that the collector file (and the spec hash it is part of)
// changes only when a value changes, not when a comment or the layout does.
func canonical(n *yaml.Node) *yaml.Node {
	c := *n
	c.HeadComment, c.LineComment, c.FootComment = "", "", ""
	if c.Kind == yaml.MappingNode || c.Kind == yaml.SequenceNode {
		c.Style = 0
	}
	if n.Content != nil {
		c.Content = make([]*yaml.Node, len(n.Content))
		for i, child := range n.Content {
			c.Content[i] = canonical(child)
		}
	}
	return &c
}

// sectionBytes returns data with every line outside the value of key blanked
// and the text before the value on its first line replaced by spaces, so that
// the section parses on its own with the line numbers it has in data.
func sectionBytes(data []byte, key, val *yaml.Node) []byte {
	lines := bytes.Split(data, []byte("\n"))
	keyIndent := key.Column - 1
	start := val.Line - 1
	var out bytes.Buffer
	for n := 0; n < start && n < len(lines); n++ {
		out.WriteByte('\n')
	}
	for n := start; n < len(lines); n++ {
		line := lines[n]
		if n == start {
			col := val.Column - 1
			if col > len(line) {
				col = len(line)
			}
			line = append(bytes.Repeat([]byte(" "), col), line[col:]...)
		} else {
			trimmed := bytes.TrimLeft(line, " ")
			blank := len(bytes.TrimSpace(trimmed)) == 0 || trimmed[0] == '#'
			if !blank && len(line)-len(trimmed) <= keyIndent {
				break
			}
		}
		out.Write(line)
		out.WriteByte('\n')
	}
	return out.Bytes()
}

// document finds nodes of the parsed file to report precise lines.
type document struct{ root *yaml.Node }

// find returns the key node (nil for sequence items) and the value node at
// path: string keys of mappings, int indexes of sequences. Both are nil when
// the path does not exist.
func (d document) find(path ...any) (key, val *yaml.Node) {
	n := d.root
	if n == nil {
		return nil, nil
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	for _, p := range path {
		key = nil
		switch p := p.(type) {
		case string:
			if n.Kind != yaml.MappingNode {
				return nil, nil
			}
			var next *yaml.Node
			for j := 0; j+1 < len(n.Content); j += 2 {
				if n.Content[j].Value == p {
					key, next = n.Content[j], n.Content[j+1]
				}
			}
			if next == nil {
				return nil, nil
			}
			n = next
		case int:
			if n.Kind != yaml.SequenceNode || p >= len(n.Content) {
				return nil, nil
			}
			n = n.Content[p]
		}
	}
	return key, n
}

func (d document) tag(path ...any) string {
	if _, v := d.find(path...); v != nil {
		return v.Tag
	}
	return ""
}

func (d document) has(path ...any) bool {
	_, v := d.find(path...)
	return v != nil
}

// pos is the position of the key at path (of the item, for an index), or of
// its nearest existing ancestor; line 1 for the document itself.
func (d document) pos(path ...any) configfile.Pos {
	for n := len(path); n > 0; n-- {
		key, val := d.find(path[:n]...)
		if key != nil {
			return configfile.Pos{Line: key.Line, Column: key.Column}
		}
		if val != nil {
			return configfile.Pos{Line: val.Line, Column: val.Column}
		}
	}
	return configfile.Pos{Line: 1, Column: 1}
}
