// Package sparkplug publishes a collector's readings as an Eclipse
// Sparkplug B 3.0 Edge Node (`mqtt.payload: sparkplug`), instead of the JSON
// contract of package publish.
//
// Each collector is one Edge Node `{gateway}-{collector}` in group
// `group_id` (default the gateway id); each configured device is a
// Sparkplug device whose metrics are its tags. A session follows the
// specification: clean session; a will that is NDEATH carrying bdSeq,
// persisted and incremented for every MQTT CONNECT; the NCMD, DCMD (and
// with a primary host, STATE) subscriptions before any birth; NBIRTH
// (bdSeq, Node Control/Rebirth) with seq 0, then one DBIRTH per answering
// device listing every metric with its datatype and current value; then
// DDATA. seq runs 0..255 over every message of the session and wraps.
// A device that stops answering gets a DDEATH, and a DBIRTH when it
// answers again. NCMD Node Control/Rebirth sends a fresh NBIRTH and every
// DBIRTH. DCMD writes writable metrics through the collector (package
// command); the next DDATA carries the new value. A stop publishes NDEATH
// before it disconnects.
//
// With a primary host application (primary_host_id), no birth goes out
// until spBv1.0/STATE/{id} says online with a timestamp at least as new as
// the last one seen; an offline STATE at least as new makes the node
// publish NDEATH and disconnect, then wait for the host again; an older
// one is ignored.
//
// Store and forward: every batch goes through the durable queue
// (DATA_DIR/sparkplug/queue) like a JSON batch does. The queue is sent only
// while the node is born; a batch sent later than its poll plus one
// interval has every metric marked is_historical. seq is assigned when a
// message is sent, never stored. Sparkplug DATA is QoS 0, so there is no
// PUBACK: a batch leaves the queue once it is written to the connection and
// an UNSUBSCRIBE sent after it has been answered — the broker handles a
// client's packets in order, so the UNSUBACK proves it received every DATA
// before it. What the broker received but could not deliver to a host that
// was already gone (between its crash and its STATE will) is not resent;
// see the README.
package sparkplug

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"fieldgate/collectors/command"
	"fieldgate/collectors/publish"
	"fieldgate/collectors/queue"
	"fieldgate/collectors/reading"
	"fieldgate/collectors/runenv"
	pb "fieldgate/collectors/sparkplug/sparkplugpb"
)

// Namespace is the first topic level of Sparkplug B.
const Namespace = "spBv1.0"

// Defaults of Config: those of the JSON publisher.
const (
	DefaultMaxInFlight  = publish.DefaultMaxInFlight
	DefaultStopTimeout  = publish.DefaultStopTimeout
	DefaultInterval     = publish.DefaultInterval
	DefaultReconnectMax = publish.DefaultReconnectMax
)

// Config says where and as which Edge Node to publish.
type Config struct {
	// Broker and credentials, as for package publish.
	Broker      string
	Credentials publish.Credentials
	// GroupID is the Sparkplug group; default GatewayID.
	GroupID string
	// GatewayID and CollectorName make the Edge Node id
	// "{gateway}-{collector}" (required).
	GatewayID, CollectorName string
	// PrimaryHostID, when set, is the host application whose STATE gates
	// births.
	PrimaryHostID string
	// Aliases makes DDATA carry metric aliases instead of names (births
	// carry both).
	Aliases bool
	// DataDir holds DATA_DIR/sparkplug/{bdseq,queue} and status.json.
	DataDir string
	// Queue bounds the outbound queue; Queue.Dir defaults to
	// DataDir/sparkplug/queue.
	Queue queue.Config
	// Interval is the poll interval: a batch sent later than its poll plus
	// Interval is historical. Default DefaultInterval.
	Interval time.Duration
	// Version is reported in status.json.
	Version string
	// MaxInFlight bounds the DATA written but not yet confirmed.
	MaxInFlight int
	// StopTimeout bounds the confirmation of the last DATA at a stop.
	StopTimeout time.Duration
	// ReconnectMax caps the back-off between connection attempts.
	ReconnectMax time.Duration
}

// ConfigFromEnv maps a collector environment onto an Edge Node config.
func ConfigFromEnv(e runenv.Env, version string) Config {
	return Config{
		Broker: e.Broker,
		Credentials: publish.Credentials{Username: e.Username, PasswordFile: e.PasswordFile,
			CAFile: e.CAFile, CertFile: e.CertFile, KeyFile: e.KeyFile},
		GroupID: e.SparkplugGroupID, GatewayID: e.GatewayID, CollectorName: e.CollectorName,
		PrimaryHostID: e.SparkplugPrimaryHostID, Aliases: e.SparkplugAliases,
		DataDir: e.DataDir, Interval: e.PollInterval, Version: version,
		Queue: queue.Config{MaxBytes: e.QueueMaxBytes, MaxAge: e.QueueMaxAge, Sync: e.QueueSync, Policy: e.QueuePolicy},
	}
}

// metric is one tag as a Sparkplug metric.
type metric struct {
	tag   reading.Tag
	alias uint64
	dt    pb.DataType
	// guessed: dt came from a value (a tag whose type the collector did
	// not know); a value of another type changes it and rebirths the device.
	guessed     bool
	last        *reading.Reading
	lastQuality int32
}

// device is one Sparkplug device.
type device struct {
	name    string
	metrics []*metric
	byName  map[string]*metric
	status  string // "" not polled yet, "ok", "error: …"
	rebirth bool   // its metric definitions changed: DBIRTH again
	// read: a batch arrived, so a birth carries values rather than nulls.
	read bool
}

// alive: answering, and read at least once (a birth lists current values).
func (d *device) alive() bool { return d.status == "ok" && d.read }
func (d *device) dead() bool  { return strings.HasPrefix(d.status, "error") }

// Node is an Edge Node. It implements the collectors' Sink (Publish,
// SetDeviceStatus); Run connects and sends. Create it with New.
type Node struct {
	cfg     Config
	log     *slog.Logger
	edge    string
	devices []*device
	byName  map[string]*device
	byAlias map[uint64]struct {
		d *device
		m *metric
	}
	queue *queue.Queue
	bdSeq *bdSeqFile
	cmds  *command.Handler

	mu        sync.Mutex
	recSeq    uint64
	changed   chan struct{} // device states changed (capacity 1)
	connected bool
	lastError string
	published uint64
	// stateTS is the newest primary host STATE timestamp seen (ms), -1
	// before the first; only the session goroutine uses it.
	stateTS int64
}

// New validates cfg and the devices of schema (every metric the node will
// ever report), and opens the bdSeq file and the queue. It does not
// connect: Run does.
func New(cfg Config, schema []reading.Device, log *slog.Logger) (*Node, error) {
	if log == nil {
		return nil, errors.New("sparkplug: nil logger")
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = DefaultStopTimeout
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.ReconnectMax <= 0 {
		cfg.ReconnectMax = DefaultReconnectMax
	}
	if cfg.GroupID == "" {
		cfg.GroupID = cfg.GatewayID
	}
	broker, err := runenv.NormalizeBroker(cfg.Broker)
	if err != nil {
		return nil, fmt.Errorf("sparkplug: %w", err)
	}
	cfg.Broker = broker
	if runenv.PlaintextPassword(broker, cfg.Credentials.PasswordFile) {
		log.Warn("mqtt password goes over an unencrypted connection; use ssl:// or wss:// unless the network is trusted", "broker", broker)
	}
	if cfg.GatewayID == "" || cfg.CollectorName == "" {
		return nil, errors.New("sparkplug: gateway id and collector name are required (they make the edge node id)")
	}
	n := &Node{cfg: cfg, log: log.With("edge_node", cfg.GatewayID+"-"+cfg.CollectorName), edge: cfg.GatewayID + "-" + cfg.CollectorName,
		byName: map[string]*device{}, changed: make(chan struct{}, 1), stateTS: -1,
		byAlias: map[uint64]struct {
			d *device
			m *metric
		}{}}
	var problems []string
	for _, e := range []struct{ kind, id string }{{"group_id", cfg.GroupID}, {"edge node id", n.edge}} {
		if err := runenv.CheckSparkplugID(e.kind, e.id); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if cfg.PrimaryHostID != "" {
		if err := runenv.CheckSparkplugID("primary_host_id", cfg.PrimaryHostID); err != nil {
			problems = append(problems, err.Error())
		}
	}
	alias := uint64(0)
	for _, sd := range schema {
		if err := runenv.CheckSparkplugID("device", sd.Name); err != nil {
			problems = append(problems, err.Error())
			continue
		}
		d := &device{name: sd.Name, byName: map[string]*metric{}}
		for _, t := range sd.Tags {
			if t.Name == MetricBdSeq || strings.HasPrefix(t.Name, "Node Control/") {
				problems = append(problems, fmt.Sprintf("device %q: tag name %q is reserved by Sparkplug", sd.Name, t.Name))
				continue
			}
			alias++
			m := &metric{tag: t, alias: alias, dt: dataType(t.Type, nil), lastQuality: QualityGood}
			m.guessed = m.dt == pb.DataType_Unknown
			d.metrics = append(d.metrics, m)
			d.byName[t.Name] = m
			n.byAlias[alias] = struct {
				d *device
				m *metric
			}{d, m}
		}
		n.devices = append(n.devices, d)
		n.byName[d.name] = d
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("sparkplug: %s", strings.Join(problems, "; "))
	}
	if cfg.DataDir == "" {
		return nil, errors.New("sparkplug: data dir is required (it keeps bdSeq and the queue)")
	}
	dir := filepath.Join(cfg.DataDir, "sparkplug")
	if n.bdSeq, err = openBdSeq(dir); err != nil {
		return nil, fmt.Errorf("sparkplug: %w", err)
	}
	if cfg.Queue.Dir == "" {
		cfg.Queue.Dir = filepath.Join(dir, "queue")
		n.cfg.Queue.Dir = cfg.Queue.Dir
	}
	if n.queue, err = queue.Open(cfg.Queue, log); err != nil {
		return nil, fmt.Errorf("sparkplug: %w", err)
	}
	n.recSeq = n.queue.LastSeq()
	return n, nil
}

// HandleCommands makes DCMD writes go through h (call before Run). Without
// it every DCMD is refused.
func (n *Node) HandleCommands(h *command.Handler) { n.cmds = h }

// SetTagType records a tag's type once the collector learns it (an OPC UA
// node's DataType), before or after the device's birth; a change rebirths
// the device.
func (n *Node) SetTagType(device, tag string, t reading.DataType) {
	n.mu.Lock()
	defer n.mu.Unlock()
	d := n.byName[device]
	if d == nil {
		return
	}
	m := d.byName[tag]
	dt := dataType(t, nil)
	if m == nil || dt == pb.DataType_Unknown || (m.dt == dt && !m.guessed) {
		return
	}
	changed := m.dt != dt
	m.tag.Type, m.dt, m.guessed = t, dt, false
	if changed {
		d.rebirth = true
		n.signal()
	}
}

// signal wakes the session to look at device states; n.mu is held.
func (n *Node) signal() {
	select {
	case n.changed <- struct{}{}:
	default:
	}
}

// SetDeviceStatus records a device's state ("ok" or "error: …"): a device
// that stops answering gets a DDEATH, one that answers again a DBIRTH.
func (n *Node) SetDeviceStatus(device, status string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	d := n.byName[device]
	if d == nil || d.status == status {
		return
	}
	wasAlive := d.alive()
	d.status = status
	if d.alive() != wasAlive {
		n.signal()
	}
}

// Publish takes one batch: its readings update the values births report,
// and unless the device is dead (its DDEATH says so) it is queued as a
// DDATA payload without seq. It returns an error only when the disk fails.
func (n *Node) Publish(_ context.Context, b reading.Batch) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	d := n.byName[b.Device]
	if d == nil {
		n.log.Warn("batch of an unknown device dropped", "device", b.Device)
		return nil
	}
	if !d.read {
		d.read = true
		if d.alive() {
			n.signal()
		}
	}
	p := &pb.Payload{Timestamp: millis(b.TS), Metrics: make([]*pb.Payload_Metric, 0, len(b.Readings))}
	for i := range b.Readings {
		r := b.Readings[i]
		m := d.byName[r.Tag]
		if m == nil {
			continue
		}
		m.last = &r
		if r.Value != nil && m.guessed {
			if dt := dataType(reading.TypeUnknown, r.Value); dt != m.dt && dt != pb.DataType_Unknown {
				m.dt = dt
				d.rebirth = true
				n.signal()
			}
		}
		if d.dead() {
			continue
		}
		p.Metrics = append(p.Metrics, n.dataMetric(m, &r))
	}
	if d.dead() || len(p.Metrics) == 0 {
		return nil
	}
	payload, err := proto.Marshal(p)
	if err != nil {
		return fmt.Errorf("sparkplug: encode DDATA of %q: %w", d.name, err)
	}
	n.recSeq++
	err = n.queue.Append(queue.Record{Seq: n.recSeq, TS: b.TS, Topic: d.name, Payload: payload})
	switch {
	case errors.Is(err, queue.ErrFull):
		n.log.Warn("outbound queue full, batch rejected", "device", d.name, "rejected_total", n.queue.Stats().Rejected)
		return nil
	case err != nil:
		return fmt.Errorf("sparkplug: %w", err)
	}
	return nil
}

// dataMetric is a reading as a DDATA metric, by name (the sender swaps in
// the alias). Quality goes along when it is not good, or when it turns
// good again; n.mu is held.
func (n *Node) dataMetric(m *metric, r *reading.Reading) *pb.Payload_Metric {
	pm := &pb.Payload_Metric{Name: proto.String(m.tag.Name), Timestamp: millis(r.TS)}
	v := r.Value
	if r.Quality == reading.Bad {
		v = nil
	}
	q := qualityCode(r.Quality)
	setValue(pm, m.dt, v)
	pm.Properties = properties(r, q, q != QualityGood || m.lastQuality != QualityGood, "")
	m.lastQuality = q
	return pm
}

// deviceBirth is the DBIRTH payload of d: every metric with name, alias
// (when used), datatype, unit and its current value — null with quality
// stale before the first poll; n.mu is held.
func (n *Node) deviceBirth(d *device, now time.Time) *pb.Payload {
	p := &pb.Payload{Timestamp: millis(now), Metrics: make([]*pb.Payload_Metric, 0, len(d.metrics))}
	for _, m := range d.metrics {
		pm := &pb.Payload_Metric{Name: proto.String(m.tag.Name)}
		if n.cfg.Aliases {
			pm.Alias = proto.Uint64(m.alias)
		}
		r := m.last
		switch {
		case r == nil:
			pm.Timestamp = millis(now)
			setValue(pm, m.dt, nil)
			pm.Properties = properties(nil, QualityStale, true, m.tag.Unit)
		default:
			pm.Timestamp = millis(r.TS)
			v := r.Value
			if r.Quality == reading.Bad {
				v = nil
			}
			setValue(pm, m.dt, v)
			q := qualityCode(r.Quality)
			pm.Properties = properties(r, q, q != QualityGood, m.tag.Unit)
			m.lastQuality = q
		}
		p.Metrics = append(p.Metrics, pm)
	}
	d.rebirth = false
	return p
}

// Stats are the node's counters.
type Stats struct {
	Published uint64 // DATA confirmed by the broker
	Pending   int    // batches queued or in flight
	Dropped   uint64
	Rejected  uint64
	Connected bool
	LastError string
}

// Stats returns the counters.
func (n *Node) Stats() Stats {
	q := n.queue.Stats()
	n.mu.Lock()
	defer n.mu.Unlock()
	return Stats{Published: n.published, Pending: q.Pending, Dropped: q.Dropped, Rejected: q.Rejected,
		Connected: n.connected, LastError: n.lastError}
}

// writeStatus replaces DATA_DIR/status.json, the way the JSON publisher
// does, so the supervisor shows a Sparkplug collector like any other.
func (n *Node) writeStatus(state string) {
	q := n.queue.Stats()
	n.mu.Lock()
	devices := make(map[string]string, len(n.devices))
	for _, d := range n.devices {
		if d.status != "" {
			devices[d.name] = d.status
		}
	}
	fs := publish.FileStatus{
		Status: publish.Status{State: state, TS: time.Now().UnixMilli(), Version: n.cfg.Version, Devices: devices},
		MQTT:   publish.MQTTStatus{Broker: n.cfg.Broker, Connected: n.connected, LastError: n.lastError, Published: n.published},
	}
	fs.AddQueue(q)
	n.mu.Unlock()
	if err := publish.WriteStatusFile(n.cfg.DataDir, fs); err != nil {
		n.log.Warn("status file not written", "dir", n.cfg.DataDir, "err", err)
	}
}

func (n *Node) topic(kind, device string) string {
	t := Namespace + "/" + n.cfg.GroupID + "/" + kind + "/" + n.edge
	if device != "" {
		t += "/" + device
	}
	return t
}

// clientID is stable across restarts and unique per collector; the
// readable part is cut with a hash of the whole when too long.
func clientID(gateway, collector string) string {
	id := "fg-" + gateway + "-" + collector
	if len(id) <= 64 {
		return id
	}
	h := fnv.New32a()
	h.Write([]byte(id))
	return fmt.Sprintf("%s-%08x", id[:55], h.Sum32())
}
