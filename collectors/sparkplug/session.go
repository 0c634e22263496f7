package sparkplug

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	"fieldgate/collectors/command"
	"fieldgate/collectors/publish"
	"fieldgate/collectors/queue"
	pb "fieldgate/collectors/sparkplug/sparkplugpb"
)

// errHostOffline ends a session whose primary host went offline: the node
// publishes NDEATH, disconnects, and connects again to wait for it.
var errHostOffline = errors.New("primary host application offline")

// Run connects and keeps an Edge Node session until ctx is cancelled, then
// waits up to StopTimeout for the last DATA to be confirmed, publishes
// NDEATH, disconnects and closes the queue. Connection failures are
// retried with back-off (1 s doubling to ReconnectMax), each logged with
// the broker's reason. It returns nil after ctx is cancelled.
func (n *Node) Run(ctx context.Context) error {
	defer n.close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return n.queue.RunSync(gctx) })
	g.Go(func() error { return n.statusLoop(gctx) })
	g.Go(func() error { return n.connection(gctx) })
	return g.Wait()
}

func (n *Node) close() {
	n.writeStatus("offline")
	if err := n.queue.Close(); err != nil {
		n.log.Error("outbound queue close failed", "err", err)
	}
}

// statusLoop rewrites DATA_DIR/status.json every second.
func (n *Node) statusLoop(ctx context.Context) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		n.writeStatus("online")
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func (n *Node) setConnected(up bool, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.connected = up
	if err != nil {
		n.lastError = err.Error()
	} else if up {
		n.lastError = ""
	}
}

// connection runs one session after the other until ctx ends.
func (n *Node) connection(ctx context.Context) error {
	backoff := time.Second
	for ctx.Err() == nil {
		s, err := n.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			n.setConnected(false, err)
			n.log.Error("mqtt connect failed", "broker", n.cfg.Broker, "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return nil
			}
			backoff = min(2*backoff, n.cfg.ReconnectMax)
			continue
		}
		backoff = time.Second
		err = s.run(ctx)
		s.end(ctx.Err() != nil || errors.Is(err, errHostOffline))
		n.setConnected(false, err)
		if ctx.Err() != nil {
			return nil
		}
		n.log.Warn("sparkplug session ended", "bdseq", s.bdSeq, "err", err)
	}
	return nil
}

// inbound is a command or STATE message for the session goroutine.
type inbound struct {
	topic   string
	payload []byte
}

// inflight is a DATA written (or being written) but not yet confirmed.
type inflight struct {
	seq uint64 // the queue record
	tok mqtt.Token
}

// session is one MQTT connection of the Edge Node. Everything but the
// message handlers and the confirmer runs on the session goroutine, which
// alone assigns seq.
type session struct {
	n       *Node
	ctx     context.Context
	client  mqtt.Client
	bdSeq   uint64
	seq     uint64
	fence   string
	inbound chan inbound

	deadOnce sync.Once
	dead     chan struct{} // closed when the connection is lost (or given up)
	deadErr  error

	hostOnline   bool
	nodeBorn     bool
	born         map[*device]bool
	pendingDeath map[*device]bool
}

// connect opens a session: the next bdSeq, a will that is NDEATH with it, a
// clean session, then the NCMD, DCMD (and STATE) subscriptions.
func (n *Node) connect(ctx context.Context) (*session, error) {
	bd, err := n.bdSeq.next()
	if err != nil {
		return nil, err
	}
	s := &session{n: n, ctx: ctx, bdSeq: bd, inbound: make(chan inbound, 256), dead: make(chan struct{}),
		born: map[*device]bool{}, pendingDeath: map[*device]bool{},
		// UNSUBSCRIBE of a filter the node never subscribed to: a round
		// trip without side effects that confirms the DATA written before it.
		fence: n.topic("DCMD", "") + "/#"}
	opts := mqtt.NewClientOptions().
		AddBroker(n.cfg.Broker).
		SetClientID(clientID(n.cfg.GatewayID, n.cfg.CollectorName)).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetKeepAlive(30*time.Second).
		SetOrderMatters(true).
		SetWriteTimeout(10*time.Second).
		SetConnectTimeout(10*time.Second).
		SetBinaryWill(n.topic("NDEATH", ""), deathPayload(bd, time.Now()), 1, false)
	if err := publish.Secure(opts, n.cfg.Broker, n.cfg.Credentials); err != nil {
		return nil, err
	}
	opts.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
		n.log.Warn("mqtt connection lost", "err", err)
		s.die(fmt.Errorf("connection lost: %w", err))
	})
	s.client = mqtt.NewClient(opts)
	tok := s.client.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	subs := map[string]byte{n.topic("NCMD", ""): 1, n.topic("DCMD", "+"): 1}
	if n.cfg.PrimaryHostID != "" {
		subs[Namespace+"/STATE/"+n.cfg.PrimaryHostID] = 1
	}
	st := s.client.SubscribeMultiple(subs, s.onMessage)
	if !st.WaitTimeout(10*time.Second) || st.Error() != nil {
		s.client.Disconnect(0)
		return nil, fmt.Errorf("subscribe to commands: %v", st.Error())
	}
	n.setConnected(true, nil)
	n.log.Info("mqtt connected", "broker", n.cfg.Broker, "bdseq", bd, "group", n.cfg.GroupID)
	return s, nil
}

func (s *session) die(err error) {
	s.deadOnce.Do(func() {
		s.deadErr = err
		close(s.dead)
	})
}

// onMessage runs on paho's goroutine and must not block: STATE and NCMD
// go to the session goroutine, DCMD runs on its own.
func (s *session) onMessage(_ mqtt.Client, m mqtt.Message) {
	topic := m.Topic()
	payload := append([]byte(nil), m.Payload()...)
	if strings.HasPrefix(topic, Namespace+"/STATE/") {
		select {
		case s.inbound <- inbound{topic, payload}:
		default:
			s.n.log.Warn("STATE message dropped: session busy", "topic", topic)
		}
		return
	}
	if m.Retained() {
		// A retained command would run again at every reconnect.
		s.n.log.Warn("retained command ignored", "topic", topic)
		return
	}
	parts := strings.Split(topic, "/")
	if len(parts) == 5 && parts[2] == "DCMD" {
		go s.n.deviceCommand(s.ctx, parts[4], payload)
		return
	}
	select {
	case s.inbound <- inbound{topic, payload}:
	default:
		s.n.log.Warn("NCMD dropped: session busy", "topic", topic)
	}
}

// run is the session goroutine: it waits for the primary host, sends the
// births, then the queue, and follows device states and commands until
// the connection is lost, the host goes offline or ctx ends.
func (s *session) run(ctx context.Context) error {
	for s.n.cfg.PrimaryHostID != "" && !s.hostOnline {
		select {
		case <-ctx.Done():
			return nil
		case <-s.dead:
			return s.deadErr
		case in := <-s.inbound:
			if err := s.handle(in); err != nil {
				return err
			}
		}
	}
	s.birth()

	window := make(chan inflight, s.n.cfg.MaxInFlight)
	recs := make(chan queue.Record)
	feedCtx, stopFeed := context.WithCancel(ctx)
	defer stopFeed()
	feedDone := make(chan struct{})
	go func() {
		defer close(feedDone)
		for {
			r, ok := s.n.queue.Next(feedCtx)
			if !ok {
				return
			}
			select {
			case recs <- r:
			case <-feedCtx.Done():
				s.n.queue.Resend(r.Seq)
				return
			}
		}
	}()
	confDone := make(chan struct{})
	go func() {
		defer close(confDone)
		s.confirm(window)
	}()

	var exitErr error
loop:
	for {
		if len(s.pendingDeath) > 0 {
			// A dead device's backlog is sent between a DBIRTH and a
			// DDEATH: the death waits until no more of it is ready.
			select {
			case r := <-recs:
				s.sendData(r, window)
				continue
			default:
				s.flushDeaths()
			}
		}
		select {
		case <-ctx.Done():
			break loop
		case <-s.dead:
			exitErr = s.deadErr
			break loop
		case in := <-s.inbound:
			if err := s.handle(in); err != nil {
				exitErr = err
				break loop
			}
		case <-s.n.changed:
			s.syncDevices()
		case r := <-recs:
			s.sendData(r, window)
		}
	}
	stopFeed()
	<-feedDone
	close(window)
	if exitErr == nil || errors.Is(exitErr, errHostOffline) {
		// Give the last DATA their confirmation, within bounds.
		t := time.AfterFunc(s.n.cfg.StopTimeout, func() { s.die(errors.New("stop: confirmation timed out")) })
		defer t.Stop()
	}
	<-confDone
	return exitErr
}

// end closes the session: NDEATH first when the node leaves on purpose
// (a stop, or its primary host went offline), then DISCONNECT.
func (s *session) end(ndeath bool) {
	if ndeath && s.client.IsConnectionOpen() {
		tok := s.client.Publish(s.n.topic("NDEATH", ""), 1, false, deathPayload(s.bdSeq, time.Now()))
		if !tok.WaitTimeout(time.Second) || tok.Error() != nil {
			s.n.log.Warn("NDEATH not confirmed", "err", tok.Error())
		}
	}
	s.client.Disconnect(250)
	s.die(errors.New("session ended"))
}

// handle processes a STATE or NCMD message.
func (s *session) handle(in inbound) error {
	if strings.HasPrefix(in.topic, Namespace+"/STATE/") {
		return s.state(in.payload)
	}
	var p pb.Payload
	if err := proto.Unmarshal(in.payload, &p); err != nil {
		s.n.log.Warn("NCMD ignored: not a Sparkplug B payload", "err", err)
		return nil
	}
	for _, m := range p.Metrics {
		if m.GetName() == MetricRebirth {
			if v, ok := m.Value.(*pb.Payload_Metric_BooleanValue); ok && v.BooleanValue {
				if !s.nodeBorn {
					return nil // the birth about to go out answers it
				}
				s.n.log.Info("rebirth requested")
				s.birth()
			}
			continue
		}
		s.n.log.Warn("NCMD metric not supported", "metric", m.GetName())
	}
	return nil
}

// stateMessage is the payload of spBv1.0/STATE/{host} (spec 3.0).
type stateMessage struct {
	Online    *bool  `json:"online"`
	Timestamp *int64 `json:"timestamp"`
}

// state applies a primary host STATE: online with a timestamp at least as
// new as the last seen lets births go; offline at least as new ends a born
// session; older ones are ignored.
func (s *session) state(payload []byte) error {
	var st stateMessage
	if err := json.Unmarshal(payload, &st); err != nil || st.Online == nil || st.Timestamp == nil {
		s.n.log.Warn("STATE ignored: want {\"online\":true|false,\"timestamp\":ms}", "payload", string(payload))
		return nil
	}
	if *st.Timestamp < s.n.stateTS {
		s.n.log.Info("older STATE ignored", "online", *st.Online, "timestamp", *st.Timestamp, "newest", s.n.stateTS)
		return nil
	}
	s.n.stateTS = *st.Timestamp
	s.hostOnline = *st.Online
	s.n.log.Info("primary host state", "host", s.n.cfg.PrimaryHostID, "online", *st.Online, "timestamp", *st.Timestamp)
	if !*st.Online && s.nodeBorn {
		return errHostOffline
	}
	return nil
}

func (s *session) nextSeq() uint64 {
	v := s.seq
	s.seq = (s.seq + 1) % 256
	return v
}

// birth publishes NBIRTH (seq 0) and a DBIRTH for every answering device.
func (s *session) birth() {
	s.seq = 0
	p := nodeBirth(s.bdSeq, time.Now())
	s.nextSeq()
	s.publish("NBIRTH", "", p)
	s.nodeBorn = true
	clear(s.born)
	clear(s.pendingDeath)
	s.n.log.Info("NBIRTH published", "bdseq", s.bdSeq)
	s.syncDevices()
}

func (s *session) publish(kind, device string, p *pb.Payload) {
	b, err := proto.Marshal(p)
	if err != nil {
		s.n.log.Error("encode failed", "message", kind, "device", device, "err", err)
		return
	}
	s.client.Publish(s.n.topic(kind, device), 0, false, b)
}

// syncDevices births the answering devices that are not born (or whose
// metrics changed) and kills the born ones that stopped answering.
func (s *session) syncDevices() {
	var births, deaths []*device
	s.n.mu.Lock()
	for _, d := range s.n.devices {
		switch {
		case d.alive() && (!s.born[d] || d.rebirth):
			births = append(births, d)
		case d.dead() && s.born[d]:
			deaths = append(deaths, d)
		}
	}
	s.n.mu.Unlock()
	for _, d := range births {
		s.deviceBirth(d)
	}
	for _, d := range deaths {
		s.deviceDeath(d)
	}
}

func (s *session) deviceBirth(d *device) {
	s.n.mu.Lock()
	p := s.n.deviceBirth(d, time.Now())
	s.n.mu.Unlock()
	p.Seq = proto.Uint64(s.nextSeq())
	s.publish("DBIRTH", d.name, p)
	s.born[d] = true
	delete(s.pendingDeath, d)
}

func (s *session) deviceDeath(d *device) {
	p := &pb.Payload{Timestamp: millis(time.Now()), Seq: proto.Uint64(s.nextSeq())}
	s.publish("DDEATH", d.name, p)
	s.born[d] = false
	delete(s.pendingDeath, d)
}

func (s *session) flushDeaths() {
	for d := range s.pendingDeath {
		s.n.mu.Lock()
		dead := d.dead()
		s.n.mu.Unlock()
		if dead && s.born[d] {
			s.deviceDeath(d)
		}
		delete(s.pendingDeath, d)
	}
}

// sendData publishes one queued batch as DDATA with the next seq, the
// device's birth first when needed, historical when it is late.
func (s *session) sendData(r queue.Record, window chan<- inflight) {
	n := s.n
	n.mu.Lock()
	d := n.byName[r.Topic]
	rebirth := d != nil && d.rebirth
	n.mu.Unlock()
	if d == nil {
		n.log.Warn("queued batch of a device no longer configured dropped", "device", r.Topic)
		n.queue.Ack(r.Seq)
		return
	}
	var p pb.Payload
	if err := proto.Unmarshal(r.Payload, &p); err != nil {
		n.log.Warn("corrupt queued batch skipped", "device", d.name, "err", err)
		n.queue.Ack(r.Seq)
		return
	}
	if !s.born[d] || rebirth {
		s.deviceBirth(d)
	}
	historical := time.Since(r.TS) > n.cfg.Interval
	for _, m := range p.Metrics {
		if historical {
			m.IsHistorical = proto.Bool(true)
		}
		if n.cfg.Aliases {
			if dm := d.byName[m.GetName()]; dm != nil {
				m.Alias, m.Name = proto.Uint64(dm.alias), nil
			}
		}
	}
	p.Seq = proto.Uint64(s.nextSeq())
	b, err := proto.Marshal(&p)
	if err != nil {
		n.log.Warn("queued batch cannot be encoded, skipped", "device", d.name, "err", err)
		n.queue.Ack(r.Seq)
		return
	}
	tok := s.client.Publish(n.topic("DDATA", d.name), 0, false, b)
	select {
	case window <- inflight{seq: r.Seq, tok: tok}:
	case <-s.dead:
		n.queue.Resend(r.Seq)
	}
	n.mu.Lock()
	if d.dead() {
		s.pendingDeath[d] = true
	}
	n.mu.Unlock()
}

// confirm removes DATA from the queue once the broker has them: after the
// writes of a group of DATA, an UNSUBSCRIBE round trip (the broker handles
// a connection's packets in order). A lost connection puts everything not
// confirmed back to be sent again.
func (s *session) confirm(window <-chan inflight) {
	batch := make([]inflight, 0, cap(window))
	for {
		f, ok := <-window
		if !ok {
			return
		}
		batch = append(batch[:0], f)
		closed := false
	more:
		for len(batch) < cap(batch) {
			select {
			case g, ok := <-window:
				if !ok {
					closed = true
					break more
				}
				batch = append(batch, g)
			default:
				break more
			}
		}
		good := true
		for _, f := range batch {
			select {
			case <-f.tok.Done():
				good = good && f.tok.Error() == nil
			case <-s.dead:
				good = false
			}
			if !good {
				break
			}
		}
		if good {
			ft := s.client.Unsubscribe(s.fence)
			select {
			case <-ft.Done():
				good = ft.Error() == nil
			case <-s.dead:
				good = false
			}
		}
		for _, f := range batch {
			if good {
				s.n.queue.Ack(f.seq)
			} else {
				s.n.queue.Resend(f.seq)
			}
		}
		if good {
			s.n.mu.Lock()
			s.n.published += uint64(len(batch))
			s.n.mu.Unlock()
		}
		select {
		case <-s.dead:
			for f := range window {
				s.n.queue.Resend(f.seq)
			}
			return
		default:
		}
		if closed {
			return
		}
	}
}

// deviceCommand executes a DCMD: each metric (by name or alias) is a write
// of the device's tag, checked and done like a JSON command. The next DDATA
// carries the new value.
func (n *Node) deviceCommand(ctx context.Context, device string, payload []byte) {
	n.mu.Lock()
	d := n.byName[device]
	n.mu.Unlock()
	if d == nil {
		n.log.Warn("DCMD for an unknown device ignored", "device", device)
		return
	}
	if n.cmds == nil {
		n.log.Warn("DCMD refused: no writable tags", "device", device)
		return
	}
	var p pb.Payload
	if err := proto.Unmarshal(payload, &p); err != nil {
		n.log.Warn("DCMD ignored: not a Sparkplug B payload", "device", device, "err", err)
		return
	}
	var reqs []command.Request
	for _, m := range p.Metrics {
		name := m.GetName()
		dm := d.byName[name]
		if name == "" && m.Alias != nil {
			if a, ok := n.byAlias[m.GetAlias()]; ok && a.d == d {
				dm, name = a.m, a.m.tag.Name
			}
		}
		if name == "" {
			n.log.Warn("DCMD metric without a known name or alias ignored", "device", device, "alias", m.GetAlias())
			continue
		}
		dt := pb.DataType(m.GetDatatype())
		if dt == pb.DataType_Unknown && dm != nil {
			n.mu.Lock()
			dt = dm.dt
			n.mu.Unlock()
		}
		v, err := metricValue(m, dt)
		if err != nil {
			n.log.Warn("DCMD metric ignored", "device", device, "metric", name, "err", err)
			continue
		}
		reqs = append(reqs, command.Request{Tag: name, Value: v})
	}
	if len(reqs) > 0 {
		n.cmds.Do(ctx, device, reqs)
	}
}
