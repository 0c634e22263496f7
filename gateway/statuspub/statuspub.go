// Package statuspub publishes the gateway status on MQTT per the contract
// (DESIGN.md "MQTT contract"): retained on {prefix}/{gateway}/status, with a
// will setting "state":"offline":
//
//	{"state":"online","ts":1764345600123,"version":"…",
//	 "collectors":{"modbus-line3":{"state":"running","restarts":0,"image_digest":"sha256:…",
//	   "configured_digest":"sha256:…","digest_matches":true}}}
//
// The collectors' own publisher (collectors/publish) is built for one
// collector's data and status topics with a durable seq; the gateway needs only
// one retained status message, so this package holds a small paho client of
// its own.
package statuspub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"fieldgate/collectors/publish"
	"fieldgate/collectors/runenv"
	"fieldgate/gateway/supervisor"
)

// Source gives the supervisor status and signals its changes.
type Source interface {
	Status() supervisor.Status
	Changed() <-chan struct{}
}

// Config says where to publish the gateway status.
type Config struct {
	// Broker is any MQTT_BROKER form (runenv.NormalizeBroker).
	Broker       string
	Username     string
	PasswordFile string
	CAFile       string
	CertFile     string
	KeyFile      string
	TopicPrefix  string // default "fieldgate"
	GatewayID    string
	Version      string
	// MinInterval coalesces status changes: at most one message per
	// MinInterval (default 1s).
	MinInterval time.Duration
	// Heartbeat republishes the status this often even without change, so
	// its ts shows the supervisor is alive (default 60s).
	Heartbeat time.Duration
}

// Payload is the gateway status message.
type Payload struct {
	State      string                      `json:"state"`
	TS         int64                       `json:"ts,omitempty"`
	Version    string                      `json:"version"`
	Collectors map[string]CollectorPayload `json:"collectors,omitempty"`
	// Update is the firmware update state (state, current and previous
	// versions, trial, last result); absent when no firmware is installed.
	Update *supervisor.UpdateStatus `json:"update,omitempty"`
}

// CollectorPayload is one collector in the gateway status.
type CollectorPayload struct {
	State    string `json:"state"`
	Restarts int    `json:"restarts"`
	// ImageDigest is what the task runs, ConfiguredDigest what its image
	// tag points to now; DigestMatches says they are the same.
	ImageDigest      string `json:"image_digest"`
	ConfiguredDigest string `json:"configured_digest"`
	DigestMatches    bool   `json:"digest_matches"`
}

// Publisher keeps the retained gateway status up to date. Create it with New.
type Publisher struct {
	cfg    Config
	src    Source
	log    *slog.Logger
	topic  string
	client mqtt.Client
	due    chan struct{}
}

// New validates cfg and reads the credential files; Run connects.
func New(cfg Config, src Source, log *slog.Logger) (*Publisher, error) {
	if src == nil {
		return nil, errors.New("statuspub: no status source")
	}
	if cfg.GatewayID == "" {
		return nil, errors.New("statuspub: no gateway id")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	broker, err := runenv.NormalizeBroker(cfg.Broker)
	if err != nil {
		return nil, fmt.Errorf("gateway status: %w", err)
	}
	cfg.Broker = broker
	if runenv.PlaintextPassword(broker, cfg.PasswordFile) {
		log.Warn("gateway status: mqtt password goes over an unencrypted connection; use ssl:// or wss:// unless the network is trusted", "broker", broker)
	}
	if cfg.TopicPrefix == "" {
		cfg.TopicPrefix = "fieldgate"
	}
	if cfg.MinInterval <= 0 {
		cfg.MinInterval = time.Second
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = time.Minute
	}
	p := &Publisher{
		cfg:   cfg,
		src:   src,
		log:   log,
		topic: cfg.TopicPrefix + "/" + cfg.GatewayID + "/status",
		due:   make(chan struct{}, 1),
	}
	opts := mqtt.NewClientOptions().
		AddBroker(broker).
		SetClientID(publish.ClientID(cfg.GatewayID, "supervisor")).
		SetCleanSession(true).
		SetAutoReconnect(true).
		// Offline sites: keep trying in the background from the first attempt.
		SetConnectRetry(true).
		SetConnectRetryInterval(2*time.Second).
		SetMaxReconnectInterval(30*time.Second).
		SetKeepAlive(30*time.Second).
		SetWriteTimeout(10*time.Second).
		SetConnectTimeout(10*time.Second).
		SetBinaryWill(p.topic, p.payload("offline", time.Time{}), 1, true)
	if err := publish.Secure(opts, broker, publish.Credentials{Username: cfg.Username, PasswordFile: cfg.PasswordFile,
		CAFile: cfg.CAFile, CertFile: cfg.CertFile, KeyFile: cfg.KeyFile}); err != nil {
		return nil, fmt.Errorf("gateway status: %w", err)
	}
	opts.SetOnConnectHandler(func(mqtt.Client) {
		log.Info("gateway status: mqtt connected", "broker", broker)
		p.kick()
	})
	opts.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
		log.Warn("gateway status: mqtt connection lost", "err", err)
	})
	p.client = mqtt.NewClient(opts)
	return p, nil
}

// Connected reports whether the gateway's MQTT connection is up now (a
// firmware update on trial needs it to commit).
func (p *Publisher) Connected() bool { return p.client.IsConnectionOpen() }

// Topic is the status topic, {prefix}/{gateway}/status.
func (p *Publisher) Topic() string { return p.topic }

func (p *Publisher) kick() {
	select {
	case p.due <- struct{}{}:
	default:
	}
}

// payload encodes the status; the will (zero ts) carries no collectors.
func (p *Publisher) payload(state string, ts time.Time) []byte {
	pl := Payload{State: state, Version: p.cfg.Version}
	if !ts.IsZero() {
		pl.TS = ts.UnixMilli()
	}
	if state == "online" {
		st := p.src.Status()
		pl.Collectors = make(map[string]CollectorPayload, len(st.Collectors))
		for _, c := range st.Collectors {
			pl.Collectors[c.Name] = CollectorPayload{State: c.State, Restarts: c.Restarts, ImageDigest: c.ImageDigest,
				ConfiguredDigest: c.ConfiguredDigest, DigestMatches: c.DigestMatches}
		}
		pl.Update = st.Update
	}
	b, _ := json.Marshal(pl)
	return b
}

// Run connects (retrying in the background while the broker is away),
// publishes the status at connect, on every change (coalesced) and on the
// heartbeat, and at stop publishes "offline" and disconnects within a second.
func (p *Publisher) Run(ctx context.Context) error {
	p.client.Connect() // with ConnectRetry the token completes only once connected
	defer func() {
		if p.client.IsConnectionOpen() {
			tok := p.client.Publish(p.topic, 1, true, p.payload("offline", time.Now()))
			tok.WaitTimeout(time.Second)
		}
		p.client.Disconnect(250)
	}()
	heartbeat := time.NewTicker(p.cfg.Heartbeat)
	defer heartbeat.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-p.src.Changed():
		case <-p.due:
		case <-heartbeat.C:
		}
		if wait := p.cfg.MinInterval - time.Since(last); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
		if !p.client.IsConnectionOpen() {
			continue // the connect handler kicks a publish
		}
		last = time.Now()
		tok := p.client.Publish(p.topic, 1, true, p.payload("online", last))
		if tok.WaitTimeout(5*time.Second) && tok.Error() != nil {
			p.log.Warn("gateway status: publish failed", "err", tok.Error())
		}
	}
}
