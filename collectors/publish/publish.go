// Package publish delivers a collector's reading batches to MQTT per the
// contract (DESIGN.md, "MQTT contract"): one QoS 1 message per device per
// poll on {prefix}/{gateway}/data/{collector}/{device}, a retained status on
// {prefix}/{gateway}/status/{collector} with an "offline" will, and a `seq`
// that counts data messages from 1 and continues across restarts.
//
// Publish never waits for the broker: it numbers the batch, encodes it and
// appends it to the durable outbound queue (package queue, in DATA_DIR/queue),
// which also keeps the seq counter (see the queue package: a seq is sent only
// once a durable reservation covers it, so none is reused after a power cut).
// Run sends from the queue with a bounded window of unacknowledged messages
// and removes a message only when the broker's PUBACK arrived. The queue, not
// paho, owns redelivery: the session is clean and paho does not reconnect by
// itself, because a resumed paho session completes the original tokens of
// the messages it resends without their PUBACK (and races on their DUP flag,
// eclipse-paho/paho.mqtt.golang#703). When the connection is lost, paho fails
// the window's tokens, the records go back to be sent, and Run reconnects with
// back-off; after a restart the queue resends whatever was not acknowledged.
package publish

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
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

	"fieldgate/collectors/queue"
	"fieldgate/collectors/reading"
	"fieldgate/collectors/runenv"
)

// Defaults of Config.
const (
	DefaultMaxInFlight  = 256
	DefaultStopTimeout  = 3 * time.Second
	DefaultInterval     = 5 * time.Second
	DefaultReconnectMax = 5 * time.Second
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
	// DataDir holds the outbound queue (directory "queue", which keeps the
	// seq counter), the status file, and the seq counter file of older
	// versions ("seq"). Everything in it is private: files 0600, directories
	// 0700.
	DataDir string
	// Queue bounds and durability of the outbound queue; Queue.Dir defaults
	// to DataDir/queue and Queue.LegacySeqFile to DataDir/seq.
	Queue queue.Config
	// Interval is the poll interval: a batch sent later than its poll time
	// plus Interval is marked "replayed". Default DefaultInterval.
	Interval time.Duration
	// Version is reported in the status message.
	Version string
	// MaxInFlight bounds the messages sent but not yet acknowledged;
	// default DefaultMaxInFlight.
	MaxInFlight int
	// StopTimeout bounds how long Run drains the window at shutdown;
	// default DefaultStopTimeout.
	StopTimeout time.Duration
	// ReconnectMax caps the back-off between connection attempts (1 s
	// doubling); default DefaultReconnectMax, so live data is at most that
	// late after the broker returns.
	ReconnectMax time.Duration
}

// ConfigFromEnv maps a collector environment onto a publisher config.
func ConfigFromEnv(e runenv.Env, version string) Config {
	return Config{
		Broker: e.Broker, Username: e.Username, PasswordFile: e.PasswordFile,
		CAFile: e.CAFile, CertFile: e.CertFile, KeyFile: e.KeyFile,
		TopicPrefix: e.TopicPrefix, GatewayID: e.GatewayID, CollectorName: e.CollectorName,
		DataDir: e.DataDir, Version: version, Interval: e.PollInterval,
		Queue: queue.Config{MaxBytes: e.QueueMaxBytes, MaxAge: e.QueueMaxAge, Sync: e.QueueSync, Policy: e.QueuePolicy},
	}
}

// Stats are the publisher's counters since start.
type Stats struct {
	Published    uint64 // batches acknowledged by the broker
	Pending      int    // batches queued or in flight
	Dropped      uint64 // batches dropped: queue full (drop_oldest) or too old
	Rejected     uint64 // batches refused: queue full (reject_new)
	Corrupt      uint64 // queued batches found damaged on disk and skipped
	AppendFailed uint64 // batches the disk refused (held in memory while there is room)
	Degraded     string // why the queue cannot keep its promise now; "" when it can
	Connected    bool
	LastError    string
}

// Publisher is an MQTT publisher for one collector. Create it with New.
type Publisher struct {
	cfg         Config
	log         *slog.Logger
	client      mqtt.Client
	statusTopic string
	dataPrefix  string

	queue *queue.Queue
	// pubMu orders seq numbering with queue appends.
	pubMu sync.Mutex

	mu        sync.Mutex
	devices   map[string]string
	connected bool
	// up is closed while the connection is open and replaced by an open
	// channel when it is lost, so send can wait for the broker.
	up chan struct{}
	// lost is closed when the connection is lost; connect replaces it.
	lost      chan struct{}
	lastError string
	published uint64
	statusDue chan struct{}
	handlers  []handler // subscriptions made on every connection (Handle)
	// statusFileErr: the last status file write failed (logged once).
	statusFileErr bool
}

// New validates cfg, reads the password and TLS files, and opens the
// outbound queue in DataDir. Damaged queue content never makes it fail (it is
// skipped and counted). It does not connect: Run does.
func New(cfg Config, log *slog.Logger) (*Publisher, error) {
	if cfg.TopicPrefix == "" {
		cfg.TopicPrefix = runenv.DefaultTopicPrefix
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = DefaultStopTimeout
	}
	if cfg.ReconnectMax <= 0 {
		cfg.ReconnectMax = DefaultReconnectMax
	}
	if cfg.GatewayID == "" || cfg.CollectorName == "" {
		return nil, fmt.Errorf("publish: gateway id and collector name are required")
	}
	broker, err := runenv.NormalizeBroker(cfg.Broker)
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	cfg.Broker = broker
	if runenv.PlaintextPassword(broker, cfg.PasswordFile) {
		log.Warn("mqtt password goes over an unencrypted connection; use ssl:// or wss:// unless the network is trusted", "broker", broker)
	}
	if cfg.DataDir == "" {
		return nil, fmt.Errorf("publish: data dir is required (it keeps the seq counter)")
	}
	if err := queue.MkdirPrivate(cfg.DataDir); err != nil {
		return nil, fmt.Errorf("publish: data dir %q: %w", cfg.DataDir, err)
	}
	if cfg.Queue.Dir == "" {
		cfg.Queue.Dir = filepath.Join(cfg.DataDir, "queue")
	}
	if cfg.Queue.LegacySeqFile == "" {
		cfg.Queue.LegacySeqFile = filepath.Join(cfg.DataDir, "seq")
	}
	q, err := queue.Open(cfg.Queue, log)
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	p := &Publisher{
		cfg:         cfg,
		log:         log.With("broker", broker),
		statusTopic: fmt.Sprintf("%s/%s/status/%s", cfg.TopicPrefix, cfg.GatewayID, cfg.CollectorName),
		dataPrefix:  fmt.Sprintf("%s/%s/data/%s/", cfg.TopicPrefix, cfg.GatewayID, cfg.CollectorName),
		queue:       q,
		devices:     map[string]string{},
		statusDue:   make(chan struct{}, 1),
		up:          make(chan struct{}),
		lost:        make(chan struct{}),
	}
	opts, err := p.clientOptions()
	if err != nil {
		q.Close()
		return nil, err
	}
	p.client = mqtt.NewClient(opts)
	return p, nil
}

func (p *Publisher) clientOptions() (*mqtt.ClientOptions, error) {
	cfg := p.cfg
	opts := mqtt.NewClientOptions().
		AddBroker(cfg.Broker).
		SetClientID(ClientID(cfg.GatewayID, cfg.CollectorName)).
		// Redelivery is the queue's (see the package comment).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetKeepAlive(30*time.Second).
		SetOrderMatters(false).
		SetWriteTimeout(10*time.Second).
		SetConnectTimeout(10*time.Second).
		SetBinaryWill(p.statusTopic, p.statusPayload("offline", time.Time{}, nil), 1, true)
	if err := Secure(opts, cfg.Broker, Credentials{Username: cfg.Username, PasswordFile: cfg.PasswordFile,
		CAFile: cfg.CAFile, CertFile: cfg.CertFile, KeyFile: cfg.KeyFile}); err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	opts.SetOnConnectHandler(func(c mqtt.Client) {
		p.mu.Lock()
		p.connected, p.lastError = true, ""
		select {
		case <-p.up:
		default:
			close(p.up)
		}
		p.mu.Unlock()
		p.log.Info("mqtt connected")
		p.requestStatus()
		p.subscribeHandlers(c)
	})
	opts.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
		p.mu.Lock()
		p.connected, p.lastError = false, err.Error()
		select {
		case <-p.up:
			p.up = make(chan struct{})
		default:
		}
		select {
		case <-p.lost:
		default:
			close(p.lost)
		}
		p.mu.Unlock()
		p.log.Warn("mqtt connection lost", "err", err)
	})
	return opts, nil
}

// MaxClientID is the longest MQTT client id ClientID returns. MQTT 3.1.1
// only promises 23 characters, but brokers in use (mosquitto, EMQX, HiveMQ,
// AWS IoT's 128) take 64.
const MaxClientID = 64

// ClientID is the MQTT client id of one of a gateway's clients ("fg-"
// gateway "-" role, the role being a collector name or "supervisor"), stable
// across restarts. An id longer than MaxClientID keeps a readable prefix and
// ends with "-" and 12 hex digits of the SHA-256 of the whole id, so two long
// names sharing a prefix never collide (and knock each other off the broker).
func ClientID(gateway, role string) string {
	id := "fg-" + gateway + "-" + role
	if len(id) <= MaxClientID {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	const hashLen = 12
	return id[:MaxClientID-1-hashLen] + "-" + hex.EncodeToString(sum[:])[:hashLen]
}

// Credentials are how an MQTT client proves who it is and whom it trusts.
type Credentials struct {
	Username, PasswordFile    string
	CAFile, CertFile, KeyFile string
}

// Secure applies credentials to opts for a normalised broker URL: the
// username, the password read from its file (trailing newline dropped), and
// TLS for ssl:// and wss:// brokers or whenever a CA or client certificate is
// given. Errors name the file. The gateway's own status client uses it too.
func Secure(opts *mqtt.ClientOptions, broker string, c Credentials) error {
	if c.Username != "" {
		opts.SetUsername(c.Username)
	}
	if c.PasswordFile != "" {
		pw, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return fmt.Errorf("MQTT password file %q: %w", c.PasswordFile, err)
		}
		opts.SetPassword(strings.TrimRight(string(pw), "\r\n"))
	}
	u, err := url.Parse(broker)
	if err != nil {
		return fmt.Errorf("broker %q: %w", broker, err)
	}
	if u.Scheme == "ssl" || u.Scheme == "wss" || c.CAFile != "" || c.CertFile != "" {
		tc, err := TLSConfig(c.CAFile, c.CertFile, c.KeyFile, u.Hostname())
		if err != nil {
			return err
		}
		opts.SetTLSConfig(tc)
	}
	return nil
}

// TLSConfig builds the TLS settings of an MQTT connection to host: the CA
// file (PEM) replaces the system roots when set, and a client certificate and
// key (PEM) enable mTLS. Errors name the file.
func TLSConfig(caFile, certFile, keyFile, host string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("MQTT CA file %q: %w", caFile, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("MQTT CA file %q holds no PEM certificate", caFile)
		}
		tc.RootCAs = pool
	}
	if certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("MQTT client certificate %q / key %q: %w", certFile, keyFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Publish numbers b, encodes it and appends it to the durable queue. It never
// waits for the network, nor for the disk to work: a batch the full queue
// refuses (reject_new) is counted and logged, and its seq stays unused, so
// subscribers see the gap; a batch the disk refuses is held in memory and
// still sent, and the status says "degraded" with the reason. It returns an
// error only after the publisher stopped.
func (p *Publisher) Publish(_ context.Context, b reading.Batch) error {
	b.Gateway, b.Collector = p.cfg.GatewayID, p.cfg.CollectorName
	topic := p.dataPrefix + b.Device
	p.pubMu.Lock()
	defer p.pubMu.Unlock()
	seq := p.queue.LastSeq() + 1
	b.Seq = seq
	payload := b.AppendJSON(make([]byte, 0, 64+len(b.Readings)*80))
	before := p.queue.Stats()
	err := p.queue.Append(queue.Record{Seq: seq, TS: b.TS, Topic: topic, Payload: payload})
	after := p.queue.Stats()
	switch {
	case errors.Is(err, queue.ErrFull):
		p.log.Warn("outbound queue full, batch rejected", "device", b.Device, "seq", seq, "rejected_total", after.Rejected)
		p.requestStatus() // the retained status carries the counts
		return nil
	case err != nil:
		return fmt.Errorf("publish: %w", err)
	}
	if after.Dropped > before.Dropped {
		p.log.Warn("outbound queue full or too old, oldest batches dropped", "dropped", after.Dropped-before.Dropped, "dropped_total", after.Dropped)
	}
	if after.Dropped > before.Dropped || after.Degraded != before.Degraded {
		p.requestStatus()
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
	q := p.queue.Stats()
	return Stats{Published: p.published, Pending: q.Pending, Dropped: q.Dropped, Rejected: q.Rejected,
		Corrupt: q.Corrupt, AppendFailed: q.AppendFailed, Degraded: q.Degraded,
		Connected: p.connected, LastError: p.lastError}
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
	defer p.close()
	g, gctx := errgroup.WithContext(ctx)
	window := make(chan inflight, p.cfg.MaxInFlight)
	stopping := make(chan struct{})
	g.Go(func() error { return p.queue.RunSync(gctx) })
	g.Go(func() error { return p.statusLoop(gctx) })
	g.Go(func() error { return p.connection(gctx) })
	g.Go(func() error { return p.send(gctx, window, stopping) })
	g.Go(func() error { return p.ack(window, stopping) })
	err := g.Wait()
	if p.client.IsConnectionOpen() {
		tok := p.client.Publish(p.statusTopic, 1, true, p.statusPayload("offline", time.Now(), nil))
		tok.WaitTimeout(time.Second)
	}
	p.client.Disconnect(250)
	return err
}

// close flushes the queue, which marks the seq counter cleanly stopped.
func (p *Publisher) close() {
	if err := p.queue.Close(); err != nil {
		p.log.Error("outbound queue close failed", "err", err)
	}
	p.writeStatusFile("offline")
}

// connection keeps the broker connection until ctx ends: it connects, waits
// for the connection to be lost, and connects again.
func (p *Publisher) connection(ctx context.Context) error {
	for {
		if err := p.connect(ctx); err != nil {
			return nil
		}
		p.mu.Lock()
		lost := p.lost
		p.mu.Unlock()
		select {
		case <-lost:
		case <-ctx.Done():
			return nil
		}
	}
}

// connect tries until connected, with back-off from 1 s doubling to
// ReconnectMax; each failure is logged with the broker's reason.
func (p *Publisher) connect(ctx context.Context) error {
	backoff := time.Second
	for {
		p.mu.Lock()
		p.lost = make(chan struct{})
		p.mu.Unlock()
		tok := p.client.Connect()
		select {
		case <-tok.Done():
		case <-ctx.Done():
			return ctx.Err()
		}
		err := tok.Error()
		if err == nil {
			return nil
		}
		p.mu.Lock()
		p.lastError = err.Error()
		p.mu.Unlock()
		p.log.Error("mqtt connect failed", "err", err, "retry_in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(backoff*2, p.cfg.ReconnectMax)
	}
}

type inflight struct {
	seq uint64
	tok mqtt.Token
}

// send moves queued records into the window, marking those sent later than
// their poll plus one interval as replayed. Closing the window on return lets
// ack drain what is left; stopping tells ack the drain has a deadline.
func (p *Publisher) send(ctx context.Context, window chan<- inflight, stopping chan<- struct{}) error {
	defer close(window)
	defer close(stopping)
	for {
		// While the connection is down the records stay in the queue: paho
		// would accept them while it reconnects and send them, as they
		// were, after the outage, so they would not be marked replayed.
		// Wait before picking (live-first applies after the outage) and
		// again before sending (the connection may drop while Next waits).
		if !p.waitUp(ctx) {
			return nil
		}
		r, ok := p.queue.Next(ctx)
		if !ok || !p.waitUp(ctx) {
			return nil
		}
		payload := r.Payload
		if time.Since(r.TS) > p.cfg.Interval {
			payload = markReplayed(payload)
		}
		tok := p.client.Publish(r.Topic, 1, false, payload)
		select {
		case window <- inflight{seq: r.Seq, tok: tok}:
		case <-ctx.Done():
			return nil
		}
	}
}

// waitUp waits until the connection is open; false when ctx ends first.
func (p *Publisher) waitUp(ctx context.Context) bool {
	p.mu.Lock()
	up := p.up
	p.mu.Unlock()
	select {
	case <-up:
		return true
	case <-ctx.Done():
		return false
	}
}

// markReplayed adds "replayed":true to an encoded batch. Key order does not
// matter in JSON, so it goes first.
func markReplayed(payload []byte) []byte {
	if len(payload) == 0 || payload[0] != '{' {
		return payload
	}
	out := make([]byte, 0, len(payload)+16)
	out = append(out, `{"replayed":true,`...)
	return append(out, payload[1:]...)
}

// ack waits for each message's PUBACK in order and removes acknowledged
// records from the queue; a failed message is put back to be sent again.
// Once stopping is closed it waits at most StopTimeout in all: what is not
// acknowledged by then stays queued on disk for the next start.
func (p *Publisher) ack(window <-chan inflight, stopping <-chan struct{}) error {
	var deadline <-chan time.Time
	for f := range window {
		select {
		case <-f.tok.Done():
		case <-stopping:
			if deadline == nil {
				deadline = time.After(p.cfg.StopTimeout)
			}
			select {
			case <-f.tok.Done():
			case <-deadline:
				continue
			}
		}
		if err := f.tok.Error(); err != nil {
			// A lost connection fails the whole window; that is logged once,
			// as the loss. Anything else is worth a line per batch.
			if !errors.Is(err, mqtt.ErrNotConnected) && p.Stats().Connected {
				p.log.Warn("mqtt publish failed, will resend", "seq", f.seq, "err", err)
			}
			p.queue.Resend(f.seq)
			continue
		}
		p.queue.Ack(f.seq)
		p.mu.Lock()
		p.published++
		p.mu.Unlock()
	}
	return nil
}

func (p *Publisher) statusLoop(ctx context.Context) error {
	// Status changes are coalesced: at most one status message a second. The
	// status file is rewritten every second whether or not the broker is
	// reachable: it is how the supervisor (and an engineer on the box) sees
	// a broker that refuses us.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	due := true
	for {
		p.writeStatusFile(StateOnline)
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
		p.client.Publish(p.statusTopic, 1, true, p.statusPayload(StateOnline, time.Now(), p.deviceStates()))
	}
}

// State values of the collector status besides "offline".
const (
	StateOnline   = "online"
	StateDegraded = "degraded" // running, but the queue cannot keep its promise (Status.Degraded says why)
)

func (p *Publisher) deviceStates() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	devices := make(map[string]string, len(p.devices))
	for k, v := range p.devices {
		devices[k] = v
	}
	return devices
}

// StatusFile is the name of the status file in DATA_DIR.
const StatusFile = "status.json"

// FileStatus is the content of DATA_DIR/status.json: the retained status
// plus the MQTT connection, which the broker cannot be told about.
type FileStatus struct {
	Status
	MQTT MQTTStatus `json:"mqtt"`
}

// MQTTStatus is the publisher's connection as seen from the collector.
type MQTTStatus struct {
	Broker    string `json:"broker"`
	Connected bool   `json:"connected"`
	LastError string `json:"last_error,omitempty"`
	Published uint64 `json:"published"`
}

// writeStatusFile replaces DATA_DIR/status.json (see WriteStatusFile).
func (p *Publisher) writeStatusFile(state string) {
	st := p.Stats()
	fs := FileStatus{
		Status: p.status(state, time.Now(), p.deviceStates()),
		MQTT:   MQTTStatus{Broker: p.cfg.Broker, Connected: st.Connected, LastError: st.LastError, Published: st.Published},
	}
	err := WriteStatusFile(p.cfg.DataDir, fs)
	if err != nil && !p.statusFileErr {
		p.log.Warn("status file not written", "dir", p.cfg.DataDir, "err", err)
	}
	p.statusFileErr = err != nil
}

// Status is the retained collector status message.
type Status struct {
	// State is "online", "degraded" (running, but the queue cannot keep its
	// promise: Degraded says why) or "offline".
	State    string            `json:"state"`
	TS       int64             `json:"ts,omitempty"`
	Version  string            `json:"version"`
	Devices  map[string]string `json:"devices,omitempty"`
	Degraded string            `json:"degraded,omitempty"`
	// Resumed is set for the whole run after a start that followed an
	// unclean stop which may have lost batches.
	Resumed *Resumed     `json:"resumed,omitempty"`
	Queue   *QueueStatus `json:"queue,omitempty"`
}

// Resumed names the seqs an unclean stop may have lost: every seq up to
// AfterSeq was durably written (delivered, or resent now); from LostFrom to
// LostTo (absent when that range is empty) those the queue did not keep are
// lost or were never used; numbering resumed at NextSeq.
type Resumed struct {
	AfterSeq uint64 `json:"after_seq"`
	LostFrom uint64 `json:"lost_from,omitempty"`
	LostTo   uint64 `json:"lost_to,omitempty"`
	NextSeq  uint64 `json:"next_seq"`
	Reason   string `json:"reason"`
}

// QueueStatus is the outbound queue's part of the status: batches waiting,
// and what was lost or went wrong, counted since the collector started.
type QueueStatus struct {
	Pending      int    `json:"pending"`
	Bytes        int64  `json:"bytes"`
	Dropped      uint64 `json:"dropped"`       // queue (or its memory fallback) full: oldest dropped, or too old
	Rejected     uint64 `json:"rejected"`      // queue full: new batches refused (reject_new)
	Corrupt      uint64 `json:"corrupt"`       // queued batches (or torn log tails) found damaged on disk and skipped
	AppendFailed uint64 `json:"append_failed"` // batches the disk refused (held in memory while there is room)
	AckClamped   uint64 `json:"ack_clamped"`   // acknowledged positions found past the log at start (the log counted as sent)
	InMemory     int    `json:"in_memory,omitempty"`
}

// status builds the status message.
func (p *Publisher) status(state string, ts time.Time, devices map[string]string) Status {
	st := Status{State: state, TS: ts.UnixMilli(), Version: p.cfg.Version, Devices: devices}
	st.AddQueue(p.queue.Stats())
	return st
}

// AddQueue reports the outbound queue's figures in st: its queue counters,
// degraded and resumed. Every output (JSON, Sparkplug) reports its queue
// this way.
func (st *Status) AddQueue(q queue.Stats) {
	st.Degraded = q.Degraded
	st.Queue = &QueueStatus{Pending: q.Pending, Bytes: q.Bytes, Dropped: q.Dropped, Rejected: q.Rejected,
		Corrupt: q.Corrupt, AppendFailed: q.AppendFailed, AckClamped: q.AckClamped, InMemory: q.InMemory}
	st.Resumed = nil
	if r := q.Resumed; r != nil {
		st.Resumed = &Resumed{AfterSeq: r.AfterSeq, NextSeq: r.NextSeq, Reason: r.Reason}
		if r.NextSeq > r.AfterSeq+1 {
			st.Resumed.LostFrom, st.Resumed.LostTo = r.AfterSeq+1, r.NextSeq-1
		}
	}
	if st.State == StateOnline && q.Degraded != "" {
		st.State = StateDegraded
	}
}

// statusPayload encodes the status; the will (zero ts) carries no devices.
func (p *Publisher) statusPayload(state string, ts time.Time, devices map[string]string) []byte {
	st := Status{State: state, Version: p.cfg.Version}
	if !ts.IsZero() {
		st = p.status(state, ts, devices)
	}
	b, _ := json.Marshal(st)
	return b
}
