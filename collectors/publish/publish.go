// Package publish delivers a collector's reading batches to MQTT per the
// contract (DESIGN.md, "MQTT contract"): one QoS 1 message per device per
// poll on {prefix}/{gateway}/data/{collector}/{device}, a retained status on
// {prefix}/{gateway}/status/{collector} with an "offline" will, and a `seq`
// that counts data messages from 1 and continues across restarts.
//
// Publish never waits for the broker: it numbers the batch, encodes it and
// appends it to the outbound queue. Run sends from the queue with a bounded
// window of unacknowledged messages and removes a message only when the
// broker's PUBACK arrived; paho (clean session off, auto-reconnect on) resends
// the window after a reconnect, so a broker outage costs no message that is
// still in the queue.
package publish

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/sync/errgroup"

	"fieldgate/collectors/reading"
	"fieldgate/collectors/runenv"
)

// Defaults of Config.
const (
	DefaultMaxInFlight = 256
	DefaultQueueLimit  = 100_000
	DefaultStopTimeout = 3 * time.Second
)

// Config says where and as whom to publish.
type Config struct {
	// Broker is any MQTT_BROKER form (see runenv.NormalizeBroker).
	Broker       string
	Username     string
	PasswordFile string
	// CAFile, CertFile and KeyFile enable TLS (ssl://, wss://) and mTLS.
	CAFile, CertFile, KeyFile string
	// TopicPrefix defaults to "fieldgate".
	TopicPrefix   string
	GatewayID     string
	CollectorName string
	// DataDir holds the persisted seq counter (file "seq").
	DataDir string
	// Version is reported in the status message.
	Version string
	// MaxInFlight bounds the messages sent but not yet acknowledged;
	// default DefaultMaxInFlight.
	MaxInFlight int
	// QueueLimit bounds the batches waiting in memory; when full the oldest
	// is dropped and counted. Default DefaultQueueLimit.
	QueueLimit int
	// StopTimeout bounds how long Run drains the window at shutdown;
	// default DefaultStopTimeout.
	StopTimeout time.Duration
}

// ConfigFromEnv maps a collector environment onto a publisher config.
func ConfigFromEnv(e runenv.Env, version string) Config {
	return Config{
		Broker: e.Broker, Username: e.Username, PasswordFile: e.PasswordFile,
		CAFile: e.CAFile, CertFile: e.CertFile, KeyFile: e.KeyFile,
		TopicPrefix: e.TopicPrefix, GatewayID: e.GatewayID, CollectorName: e.CollectorName,
		DataDir: e.DataDir, Version: version,
	}
}

// Stats are the publisher's counters since start.
type Stats struct {
	Published uint64 // batches acknowledged by the broker
	Pending   int    // batches queued or in flight
	Dropped   uint64 // batches dropped because the queue was full
	Connected bool
	LastError string
}

// Publisher is an MQTT publisher for one collector. Create it with New.
type Publisher struct {
	cfg         Config
	log         *slog.Logger
	client      mqtt.Client
	statusTopic string
	dataPrefix  string

	seq   *seqFile
	queue *queue

	mu        sync.Mutex
	devices   map[string]string
	connected bool
	lastError string
	published uint64
	statusDue chan struct{}
}

// New validates cfg, reads the password and TLS files, and opens the seq
// counter in DataDir. It does not connect: Run does.
func New(cfg Config, log *slog.Logger) (*Publisher, error) {
	if cfg.TopicPrefix == "" {
		cfg.TopicPrefix = runenv.DefaultTopicPrefix
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.QueueLimit <= 0 {
		cfg.QueueLimit = DefaultQueueLimit
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = DefaultStopTimeout
	}
	if cfg.GatewayID == "" || cfg.CollectorName == "" {
		return nil, fmt.Errorf("publish: gateway id and collector name are required")
	}
	broker, err := runenv.NormalizeBroker(cfg.Broker)
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	cfg.Broker = broker
	if cfg.DataDir == "" {
		return nil, fmt.Errorf("publish: data dir is required (it keeps the seq counter)")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("publish: data dir %q: %w", cfg.DataDir, err)
	}
	seq, err := openSeq(filepath.Join(cfg.DataDir, "seq"))
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	p := &Publisher{
		cfg:         cfg,
		log:         log.With("broker", broker),
		statusTopic: fmt.Sprintf("%s/%s/status/%s", cfg.TopicPrefix, cfg.GatewayID, cfg.CollectorName),
		dataPrefix:  fmt.Sprintf("%s/%s/data/%s/", cfg.TopicPrefix, cfg.GatewayID, cfg.CollectorName),
		seq:         seq,
		queue:       newQueue(cfg.QueueLimit),
		devices:     map[string]string{},
		statusDue:   make(chan struct{}, 1),
	}
	opts, err := p.clientOptions()
	if err != nil {
		seq.Close()
		return nil, err
	}
	p.client = mqtt.NewClient(opts)
	return p, nil
}

func (p *Publisher) clientOptions() (*mqtt.ClientOptions, error) {
	cfg := p.cfg
	opts := mqtt.NewClientOptions().
		AddBroker(cfg.Broker).
		SetClientID(clientID(cfg.GatewayID, cfg.CollectorName)).
		// A persistent session lets paho resend the in-flight window after a
		// reconnect and the broker keep our QoS 1 state.
		SetCleanSession(false).
		SetAutoReconnect(true).
		SetConnectRetry(false).
		SetMaxReconnectInterval(30 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetOrderMatters(false).
		SetWriteTimeout(10 * time.Second).
		SetConnectTimeout(10 * time.Second).
		SetBinaryWill(p.statusTopic, p.statusPayload("offline", time.Time{}, nil), 1, true)
	if cfg.Username != "" {
		opts.SetUsername(cfg.Username)
	}
	if cfg.PasswordFile != "" {
		pw, err := os.ReadFile(cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("publish: MQTT password file %q: %w", cfg.PasswordFile, err)
		}
		opts.SetPassword(strings.TrimRight(string(pw), "\r\n"))
	}
	u, _ := url.Parse(cfg.Broker)
	if u.Scheme == "ssl" || u.Scheme == "wss" || cfg.CAFile != "" || cfg.CertFile != "" {
		tc, err := tlsConfig(cfg, u.Hostname())
		if err != nil {
			return nil, err
		}
		opts.SetTLSConfig(tc)
	}
	opts.SetOnConnectHandler(func(mqtt.Client) {
		p.mu.Lock()
		p.connected, p.lastError = true, ""
		p.mu.Unlock()
		p.log.Info("mqtt connected")
		p.requestStatus()
	})
	opts.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
		p.mu.Lock()
		p.connected, p.lastError = false, err.Error()
		p.mu.Unlock()
		p.log.Warn("mqtt connection lost", "err", err)
	})
	return opts, nil
}

// clientID is stable across restarts so the broker resumes our session.
func clientID(gateway, collector string) string {
	id := "fg-" + gateway + "-" + collector
	if len(id) > 64 {
		id = id[:64]
	}
	return id
}

func tlsConfig(cfg Config, host string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("publish: MQTT CA file %q: %w", cfg.CAFile, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("publish: MQTT CA file %q holds no PEM certificate", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	if cfg.CertFile != "" || cfg.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("publish: MQTT client certificate %q / key %q: %w", cfg.CertFile, cfg.KeyFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Publish numbers b, encodes it and queues it for the broker. It never waits
// for the network; it fails only when the seq counter cannot be persisted.
func (p *Publisher) Publish(_ context.Context, b reading.Batch) error {
	b.Gateway, b.Collector = p.cfg.GatewayID, p.cfg.CollectorName
	topic := p.dataPrefix + b.Device
	p.queue.mu.Lock()
	seq, err := p.seq.Next()
	if err != nil {
		p.queue.mu.Unlock()
		return fmt.Errorf("publish: %w", err)
	}
	b.Seq = seq
	payload := b.AppendJSON(make([]byte, 0, 64+len(b.Readings)*80))
	dropped := p.queue.pushLocked(message{seq: seq, topic: topic, payload: payload})
	p.queue.mu.Unlock()
	if dropped > 0 {
		p.log.Warn("outbound queue full, oldest batch dropped", "limit", p.cfg.QueueLimit, "dropped_total", p.queue.Dropped())
	}
	return nil
}

// SetDeviceStatus records a device's state ("ok" or "error: …") for the
// retained status message, which is republished when a state changes.
func (p *Publisher) SetDeviceStatus(device, status string) {
	p.mu.Lock()
	changed := p.devices[device] != status
	p.devices[device] = status
	p.mu.Unlock()
	if changed {
		p.requestStatus()
	}
}

// Stats returns the counters.
func (p *Publisher) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{Published: p.published, Pending: p.queue.Len(), Dropped: p.queue.Dropped(), Connected: p.connected, LastError: p.lastError}
}

func (p *Publisher) requestStatus() {
	select {
	case p.statusDue <- struct{}{}:
	default:
	}
}

// Run connects (retrying with back-off, each failure logged with the
// broker's reason), then sends the queue until ctx is cancelled. At shutdown
// it waits up to StopTimeout for the window to be acknowledged, publishes
// the "offline" status and disconnects.
func (p *Publisher) Run(ctx context.Context) error {
	defer p.seq.Close()
	if err := p.connect(ctx); err != nil {
		return nil // ctx cancelled before the first connection
	}
	g, gctx := errgroup.WithContext(ctx)
	window := make(chan inflight, p.cfg.MaxInFlight)
	g.Go(func() error { return p.send(gctx, window) })
	g.Go(func() error { return p.ack(window) })
	g.Go(func() error { return p.statusLoop(gctx) })
	err := g.Wait()
	tok := p.client.Publish(p.statusTopic, 1, true, p.statusPayload("offline", time.Now(), nil))
	tok.WaitTimeout(time.Second)
	p.client.Disconnect(250)
	return err
}

// connect retries the first connection with exponential back-off (1 s
// doubling to 30 s). Later drops are handled by paho's auto-reconnect.
func (p *Publisher) connect(ctx context.Context) error {
	backoff := time.Second
	for {
		tok := p.client.Connect()
		select {
		case <-tok.Done():
		case <-ctx.Done():
			return ctx.Err()
		}
		if err := tok.Error(); err == nil {
			return nil
		} else {
			p.mu.Lock()
			p.lastError = err.Error()
			p.mu.Unlock()
			p.log.Error("mqtt connect failed", "err", err, "retry_in", backoff)
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

type inflight struct {
	seq uint64
	tok mqtt.Token
}

// send moves queued messages into the window. Closing the window on return
// lets ack drain what is left.
func (p *Publisher) send(ctx context.Context, window chan<- inflight) error {
	defer close(window)
	for {
		m, ok := p.queue.next(ctx)
		if !ok {
			return nil
		}
		tok := p.client.Publish(m.topic, 1, false, m.payload)
		select {
		case window <- inflight{seq: m.seq, tok: tok}:
		case <-ctx.Done():
			return nil
		}
	}
}

// ack waits for each message's PUBACK in order and removes acknowledged
// messages from the queue; a failed message is put back to be sent again.
// After the window is closed it waits at most StopTimeout in all.
func (p *Publisher) ack(window <-chan inflight) error {
	var deadline <-chan time.Time
	for f := range window {
		if deadline == nil && p.queue.closed() {
			deadline = time.After(p.cfg.StopTimeout)
		}
		select {
		case <-f.tok.Done():
		case <-deadline:
			continue
		}
		if err := f.tok.Error(); err != nil {
			if !errors.Is(err, mqtt.ErrNotConnected) {
				p.log.Warn("mqtt publish failed, will resend", "seq", f.seq, "err", err)
			}
			p.queue.resend(f.seq)
			continue
		}
		p.queue.ack(f.seq)
		p.mu.Lock()
		p.published++
		p.mu.Unlock()
	}
	return nil
}

func (p *Publisher) statusLoop(ctx context.Context) error {
	// Status changes are coalesced: at most one status message a second.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	due := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-p.statusDue:
			due = true
		case <-tick.C:
		}
		if !due || !p.client.IsConnectionOpen() {
			continue
		}
		due = false
		p.mu.Lock()
		devices := make(map[string]string, len(p.devices))
		for k, v := range p.devices {
			devices[k] = v
		}
		p.mu.Unlock()
		p.client.Publish(p.statusTopic, 1, true, p.statusPayload("online", time.Now(), devices))
	}
}

// Status is the retained collector status message.
type Status struct {
	State   string            `json:"state"`
	TS      int64             `json:"ts,omitempty"`
	Version string            `json:"version"`
	Devices map[string]string `json:"devices,omitempty"`
	Queue   *QueueStatus      `json:"queue,omitempty"`
}

// QueueStatus is the outbound queue's part of the status: batches waiting and
// batches dropped because it was full.
type QueueStatus struct {
	Pending int    `json:"pending"`
	Dropped uint64 `json:"dropped"`
}

// statusPayload encodes the status; the will (zero ts) carries no devices.
func (p *Publisher) statusPayload(state string, ts time.Time, devices map[string]string) []byte {
	st := Status{State: state, Version: p.cfg.Version, Devices: devices}
	if !ts.IsZero() {
		st.TS = ts.UnixMilli()
		st.Queue = &QueueStatus{Pending: p.queue.Len(), Dropped: p.queue.Dropped()}
	}
	b, _ := json.Marshal(st)
	return b
}
