// Package runenv reads a collector's environment (DESIGN.md, "Collector
// environment"): everything a collector needs besides its device list, so the
// same image runs under the supervisor and on a lab bench from env alone.
package runenv

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Defaults applied when a variable is unset.
const (
	DefaultPollInterval = 5 * time.Second
	DefaultBroker       = "tcp://127.0.0.1:1883"
	DefaultTopicPrefix  = "fieldgate"
	DefaultConfigPath   = "/etc/fieldgate/collector.yaml"
	DefaultDataDir      = "/var/lib/fieldgate"
	DefaultLogLevel     = "info"
)

// Env is a collector's environment after defaults and validation.
type Env struct {
	PollInterval  time.Duration // POLL_INTERVAL, default 5s
	Broker        string        // MQTT_BROKER normalised to a URL, default tcp://127.0.0.1:1883
	Username      string        // MQTT_USERNAME
	PasswordFile  string        // MQTT_PASSWORD_FILE
	CAFile        string        // MQTT_CA_FILE
	CertFile      string        // MQTT_CERT_FILE
	KeyFile       string        // MQTT_KEY_FILE
	TopicPrefix   string        // MQTT_TOPIC_PREFIX, default fieldgate
	GatewayID     string        // GATEWAY_ID, default the hostname
	CollectorName string        // COLLECTOR_NAME, default the protocol name
	ConfigPath    string        // COLLECTOR_CONFIG, default /etc/fieldgate/collector.yaml
	DataDir       string        // DATA_DIR, default /var/lib/fieldgate
	LogLevel      string        // LOG_LEVEL: debug, info, warn, error; default info

	// The durable outbound queue in DATA_DIR/queue (zero values mean the
	// queue package's defaults: 256 MiB, no age limit, fsync every 1s,
	// drop_oldest).
	QueueMaxBytes int64         // QUEUE_MAX_BYTES: bytes, or with a unit: 64MiB, 1GiB, 500MB
	QueueMaxAge   time.Duration // QUEUE_MAX_AGE: drop batches older than this; default none
	QueueSync     time.Duration // QUEUE_SYNC: "always" (fsync every batch, -1 here) or the longest wait for fsync, e.g. 1s
	QueuePolicy   string        // QUEUE_POLICY: drop_oldest or reject_new

	// The MQTT payload: the JSON contract, or Sparkplug B.
	Payload                string // MQTT_PAYLOAD: fieldgate (default) or sparkplug
	SparkplugGroupID       string // SPARKPLUG_GROUP_ID: default GATEWAY_ID
	SparkplugPrimaryHostID string // SPARKPLUG_PRIMARY_HOST_ID: no births until this host is online
	SparkplugAliases       bool   // SPARKPLUG_ALIASES: true makes DDATA carry aliases
}

// CheckSparkplugID checks a Sparkplug id (group, edge node, device, host
// application): non-empty valid UTF-8 without '/', '+' or '#' (Sparkplug
// 3.0, 4.1.1: each is a topic level). kind names it in the error.
func CheckSparkplugID(kind, id string) error {
	if id == "" || !utf8.ValidString(id) || strings.ContainsAny(id, "/+#") {
		return fmt.Errorf("%s: %q is not a valid Sparkplug id (non-empty UTF-8 without '/', '+' or '#')", kind, id)
	}
	return nil
}

// Payload formats of MQTT_PAYLOAD.
const (
	PayloadFieldgate = "fieldgate"
	PayloadSparkplug = "sparkplug"
)

// idRe is what may stand in a topic level: gateway and collector names.
var idRe = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Load reads the environment through getenv (os.Getenv in production) for a
// collector of the given protocol ("modbus", "opcua") and reports every bad
// variable at once, each named.
func Load(getenv func(string) string, protocol string) (Env, error) {
	e := Env{
		PollInterval:  DefaultPollInterval,
		Username:      getenv("MQTT_USERNAME"),
		PasswordFile:  getenv("MQTT_PASSWORD_FILE"),
		CAFile:        getenv("MQTT_CA_FILE"),
		CertFile:      getenv("MQTT_CERT_FILE"),
		KeyFile:       getenv("MQTT_KEY_FILE"),
		TopicPrefix:   orDefault(getenv("MQTT_TOPIC_PREFIX"), DefaultTopicPrefix),
		GatewayID:     getenv("GATEWAY_ID"),
		CollectorName: orDefault(getenv("COLLECTOR_NAME"), protocol),
		ConfigPath:    orDefault(getenv("COLLECTOR_CONFIG"), DefaultConfigPath),
		DataDir:       orDefault(getenv("DATA_DIR"), DefaultDataDir),
		LogLevel:      strings.ToLower(orDefault(getenv("LOG_LEVEL"), DefaultLogLevel)),
	}
	var problems []string
	if v := getenv("POLL_INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("POLL_INTERVAL: invalid duration %q (want e.g. 500ms, 5s, 1m)", v))
		case d <= 0:
			problems = append(problems, fmt.Sprintf("POLL_INTERVAL: must be positive, got %q", v))
		default:
			e.PollInterval = d
		}
	}
	broker, err := NormalizeBroker(orDefault(getenv("MQTT_BROKER"), DefaultBroker))
	if err != nil {
		problems = append(problems, "MQTT_BROKER: "+err.Error())
	}
	e.Broker = broker
	if e.GatewayID == "" {
		e.GatewayID = hostnameID()
	} else if !idRe.MatchString(e.GatewayID) {
		problems = append(problems, fmt.Sprintf("GATEWAY_ID: %q may hold only letters, digits, '_' and '-' (it is a topic level)", e.GatewayID))
	}
	if !idRe.MatchString(e.CollectorName) {
		problems = append(problems, fmt.Sprintf("COLLECTOR_NAME: %q may hold only letters, digits, '_' and '-' (it is a topic level)", e.CollectorName))
	}
	if strings.ContainsAny(e.TopicPrefix, "+#") || e.TopicPrefix == "" {
		problems = append(problems, fmt.Sprintf("MQTT_TOPIC_PREFIX: %q must be a non-empty topic without wildcards", e.TopicPrefix))
	}
	if (e.CertFile == "") != (e.KeyFile == "") {
		problems = append(problems, "MQTT_CERT_FILE and MQTT_KEY_FILE: set both for mTLS, or neither")
	}
	if _, ok := levels[e.LogLevel]; !ok {
		problems = append(problems, fmt.Sprintf("LOG_LEVEL: unknown level %q (valid: debug, info, warn, error)", e.LogLevel))
	}
	if v := getenv("QUEUE_MAX_BYTES"); v != "" {
		n, err := ParseSize(v)
		if err != nil || n <= 0 {
			problems = append(problems, fmt.Sprintf("QUEUE_MAX_BYTES: invalid size %q (want e.g. 268435456, 256MiB, 1GiB)", v))
		}
		e.QueueMaxBytes = n
	}
	if v := getenv("QUEUE_MAX_AGE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			problems = append(problems, fmt.Sprintf("QUEUE_MAX_AGE: invalid duration %q (want e.g. 24h)", v))
		}
		e.QueueMaxAge = d
	}
	if v := getenv("QUEUE_SYNC"); v == "always" {
		e.QueueSync = -1 // queue.SyncAlways
	} else if v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			problems = append(problems, fmt.Sprintf("QUEUE_SYNC: invalid value %q (valid: always, or a duration such as 1s)", v))
		}
		e.QueueSync = d
	}
	switch v := getenv("QUEUE_POLICY"); v {
	case "", "drop_oldest", "reject_new":
		e.QueuePolicy = v
	default:
		problems = append(problems, fmt.Sprintf("QUEUE_POLICY: unknown policy %q (valid: drop_oldest, reject_new)", v))
	}
	problems = append(problems, e.loadPayload(getenv)...)
	if len(problems) > 0 {
		return e, fmt.Errorf("environment: %s", strings.Join(problems, "; "))
	}
	return e, nil
}

// loadPayload reads MQTT_PAYLOAD and the SPARKPLUG_* variables.
func (e *Env) loadPayload(getenv func(string) string) []string {
	var problems []string
	switch v := getenv("MQTT_PAYLOAD"); v {
	case "", PayloadFieldgate:
		e.Payload = PayloadFieldgate
	case PayloadSparkplug:
		e.Payload = v
	default:
		problems = append(problems, fmt.Sprintf("MQTT_PAYLOAD: unknown payload %q (valid: %s, %s)", v, PayloadFieldgate, PayloadSparkplug))
	}
	e.SparkplugGroupID = getenv("SPARKPLUG_GROUP_ID")
	e.SparkplugPrimaryHostID = getenv("SPARKPLUG_PRIMARY_HOST_ID")
	for _, kv := range [][2]string{{"SPARKPLUG_GROUP_ID", e.SparkplugGroupID}, {"SPARKPLUG_PRIMARY_HOST_ID", e.SparkplugPrimaryHostID}} {
		if kv[1] != "" {
			if err := CheckSparkplugID(kv[0], kv[1]); err != nil {
				problems = append(problems, err.Error())
			}
		}
	}
	switch v := strings.ToLower(getenv("SPARKPLUG_ALIASES")); v {
	case "", "false", "0", "no":
	case "true", "1", "yes":
		e.SparkplugAliases = true
	default:
		problems = append(problems, fmt.Sprintf("SPARKPLUG_ALIASES: invalid value %q (valid: true, false)", v))
	}
	return problems
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// hostnameID is the hostname's first label made fit for a topic level.
func hostnameID() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "gateway"
	}
	h, _, _ = strings.Cut(h, ".")
	return strings.Map(func(r rune) rune {
		if r == '_' || r == '-' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			return r
		}
		return '-'
	}, h)
}

// defaultPorts are the MQTT ports of each scheme.
var defaultPorts = map[string]string{"tcp": "1883", "mqtt": "1883", "ssl": "8883", "tls": "8883", "mqtts": "8883", "ws": "80", "wss": "443"}

// NormalizeBroker turns every MQTT_BROKER form into a URL paho accepts:
// "broker.local" → "tcp://broker.local:1883", "broker.local:1884" →
// "tcp://broker.local:1884", and URLs with scheme tcp, ssl, ws or wss (mqtt,
// mqtts and tls are accepted as aliases) get their default port when they
// have none. It is the one parser of broker addresses: the gateway config,
// the collectors and the supervisor's status client all use it.
//
// Credentials in the address ("tcp://user:pw@host") are refused, since an
// address is shown in logs, status.json and /status: the user goes in
// mqtt.username / MQTT_USERNAME and the password in the file named by
// mqtt.password_file / MQTT_PASSWORD_FILE. No error repeats what stood
// before the '@'.
func NormalizeBroker(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", fmt.Errorf("empty broker address")
	}
	if shown, ok := withoutUserinfo(s); ok {
		return "", fmt.Errorf("broker %q carries credentials in its address; give the user as mqtt.username (MQTT_USERNAME) and the password in the file named by mqtt.password_file (MQTT_PASSWORD_FILE)", shown)
	}
	if !strings.Contains(s, "://") {
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			host, port = s, "1883"
		}
		if host == "" || strings.ContainsAny(host, "/ ") {
			return "", fmt.Errorf("invalid broker %q (want host, host:port or tcp://, ssl://, ws:// URL)", s)
		}
		return "tcp://" + net.JoinHostPort(host, port), nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("invalid broker %q: %w", s, err)
	}
	scheme := strings.ToLower(u.Scheme)
	port, ok := defaultPorts[scheme]
	if !ok {
		return "", fmt.Errorf("unknown scheme %q in broker %q (valid: tcp, ssl, ws, wss; mqtt, mqtts, tls as aliases)", u.Scheme, s)
	}
	switch scheme {
	case "mqtt":
		scheme = "tcp"
	case "mqtts", "tls":
		scheme = "ssl"
	}
	if u.Hostname() == "" {
		return "", fmt.Errorf("broker %q has no host", s)
	}
	if u.Port() != "" {
		port = u.Port()
	}
	u.Scheme = scheme
	u.Host = net.JoinHostPort(u.Hostname(), port)
	return u.String(), nil
}

// withoutUserinfo reports whether s has a userinfo part ("user:pw@" after
// the scheme, or before the host when there is no scheme) and returns s
// without it, for messages.
func withoutUserinfo(s string) (string, bool) {
	prefix, rest := "", s
	if i := strings.Index(s, "://"); i >= 0 {
		prefix, rest = s[:i+3], s[i+3:]
	}
	authority := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority = rest[:i]
	}
	at := strings.LastIndex(authority, "@")
	if at < 0 {
		return s, false
	}
	return prefix + rest[at+1:], true
}

// PlaintextPassword reports whether a password given for broker (a
// NormalizeBroker URL) travels unencrypted: over tcp:// or ws://. Callers
// warn once at start; the broker may still be on a trusted network.
func PlaintextPassword(broker, passwordFile string) bool {
	if passwordFile == "" {
		return false
	}
	scheme, _, _ := strings.Cut(broker, "://")
	return scheme == "tcp" || scheme == "ws"
}

var levels = map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError}

// Logger returns a text logger at the environment's level writing to w, with
// the collector's name on every line.
func (e Env) Logger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: levels[e.LogLevel]})).With("collector", e.CollectorName)
}

// sizeUnits are the multipliers ParseSize accepts (IEC and SI, case as
// written by engineers: 64MiB, 64Mi, 64M, 64MB).
var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1000, "kb": 1000, "ki": 1 << 10, "kib": 1 << 10,
	"m": 1000 * 1000, "mb": 1000 * 1000, "mi": 1 << 20, "mib": 1 << 20,
	"g": 1000 * 1000 * 1000, "gb": 1000 * 1000 * 1000, "gi": 1 << 30, "gib": 1 << 30,
}

// ParseSize reads a byte size such as "268435456", "256MiB", "64Mi", "500MB"
// or "1G" (SI units are powers of 1000, IEC units powers of 1024).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := sizeUnits[unit]
	if num == "" || !ok {
		return 0, fmt.Errorf("invalid size %q (want e.g. 64MiB, 500MB, 1GiB)", s)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q: %w", s, err)
	}
	return int64(f * float64(mult)), nil
}
