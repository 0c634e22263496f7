package opcua

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"
	"golang.org/x/sync/errgroup"

	"fieldgate/collectors/reading"
)

// The engine drives the Publish service itself instead of using gopcua's
// Subscribe, because gopcua hides keep-alive messages: without them a
// subscription that went silent cannot be told from one whose values do not
// change.
//
// Tags are spread over several subscriptions of at most maxPerSub items,
// whole devices at a time (so each device still gets one batch per
// publishing cycle): a server that does not split large publish responses
// (gopcua's own server sends every pending change in one message) then
// never sends a message larger than a client accepts.

// subSession is one session's subscriptions and the state they share.
type subSession struct {
	e *Engine
	c *opcua.Client

	mu   sync.Mutex
	subs map[uint32]*subscription
	acks []*ua.SubscriptionAcknowledgement // to send with the next Publish
}

// subscription is one subscription and its monitored items. Its fields are
// guarded by subSession.mu except got and lastSeen, which only the
// processing goroutine touches.
type subscription struct {
	id      uint32
	silence time.Duration   // no Publish response for this long: the subscription is dead
	active  map[uint32]*tag // client handle → tag, items the server accepted
	failed  []*tag          // items the server rejected, retried every itemRetry

	lastSeen time.Time
	got      cycle // readings of the cycle being received
}

// groups splits the tags into subscription groups of whole devices, at most
// max items each (a device with more tags gets a group of its own).
func groups(devices []string, byDev map[string][]*tag, max int) [][]*tag {
	var out [][]*tag
	var cur []*tag
	for _, d := range devices {
		ts := byDev[d]
		if len(cur) > 0 && len(cur)+len(ts) > max {
			out = append(out, cur)
			cur = nil
		}
		cur = append(cur, ts...)
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

func (e *Engine) runSubscribe(ctx context.Context, c *opcua.Client, lim limits) error {
	s := &subSession{e: e, c: c, subs: map[uint32]*subscription{}}
	bad := e.newCycle()
	for _, g := range groups(e.devices, e.byDev, e.opt.maxPerSub) {
		sub, err := s.subscribe(ctx)
		if err != nil {
			return err
		}
		if err := s.create(ctx, sub, g, lim.perCall, bad); err != nil {
			return err
		}
	}
	s.afterCreate(ctx, bad)
	// Creating many items takes a while; the keep-alive watch starts now.
	now := time.Now()
	s.mu.Lock()
	for _, sub := range s.subs {
		sub.lastSeen = now
	}
	s.mu.Unlock()

	// Enough Publish requests in flight that every subscription can answer
	// in the same cycle without waiting for a round trip.
	senders := min(len(s.subs), 4) + 1
	responses := make(chan *ua.PublishResponse, senders)
	g, gctx := errgroup.WithContext(ctx)
	for i := 0; i < senders; i++ {
		g.Go(func() error { return s.sender(gctx, responses) })
	}
	g.Go(func() error { return s.process(gctx, responses) })
	g.Go(func() error { return s.retryLoop(gctx, lim.perCall) })
	return g.Wait()
}

// subscribe creates one subscription.
func (s *subSession) subscribe(ctx context.Context) (*subscription, error) {
	tm := s.e.timing()
	req := &ua.CreateSubscriptionRequest{
		RequestedPublishingInterval: ms(tm.publishing),
		RequestedLifetimeCount:      tm.lifetime,
		RequestedMaxKeepAliveCount:  tm.keepAlive,
		// Bounded so a cycle of many changes travels as several moderate
		// messages (MoreNotifications) instead of one huge one.
		MaxNotificationsPerPublish: uint32(s.e.opt.maxBatch),
		PublishingEnabled:          true,
	}
	var res *ua.CreateSubscriptionResponse
	if err := s.c.Send(ctx, req, func(v ua.Response) error { return assign(v, &res) }); err != nil {
		return nil, fmt.Errorf("create subscription: %w", err)
	}
	revPub := time.Duration(res.RevisedPublishingInterval * float64(time.Millisecond))
	if revPub <= 0 {
		revPub = tm.publishing
	}
	ka := max(res.RevisedMaxKeepAliveCount, 1)
	sub := &subscription{
		id: res.SubscriptionID,
		// One keep-alive period (some servers send it a cycle late) plus
		// slack for a loaded server and network.
		silence:  time.Duration(ka+1)*revPub + max(revPub, 5*time.Second),
		active:   map[uint32]*tag{},
		got:      s.e.newCycle(),
		lastSeen: time.Now(),
	}
	s.mu.Lock()
	s.subs[sub.id] = sub
	s.mu.Unlock()
	s.e.log.Debug("opcua subscription created", "id", sub.id, "publishing_interval", revPub, "keepalive_count", ka)
	return sub, nil
}

func assign[T any](v ua.Response, dst *T) error {
	r, ok := v.(T)
	if !ok {
		return fmt.Errorf("unexpected response %T", v)
	}
	*dst = r
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func (e *Engine) itemRequest(t *tag) *ua.MonitoredItemCreateRequest {
	var filter *ua.ExtensionObject
	if d := t.deadband; d != nil {
		kind := uint32(ua.DeadbandTypeAbsolute)
		if d.Type == DeadbandPercent {
			kind = uint32(ua.DeadbandTypePercent)
		}
		filter = ua.NewExtensionObject(&ua.DataChangeFilter{
			Trigger:       ua.DataChangeTriggerStatusValue,
			DeadbandType:  kind,
			DeadbandValue: d.Value,
		})
	}
	return &ua.MonitoredItemCreateRequest{
		ItemToMonitor: &ua.ReadValueID{
			NodeID:       t.id,
			AttributeID:  ua.AttributeIDValue,
			DataEncoding: &ua.QualifiedName{},
		},
		MonitoringMode: ua.MonitoringModeReporting,
		RequestedParameters: &ua.MonitoringParameters{
			ClientHandle:     t.handle,
			SamplingInterval: ms(t.sampling),
			Filter:           filter,
			QueueSize:        e.cfg.QueueSize,
			DiscardOldest:    true,
		},
	}
}

// create creates monitored items for tags in sub, in requests of at most
// perCall items. Items the server rejects are added to bad (by device) and
// kept for retryLoop; a failed request (not a rejected item) is returned.
func (s *subSession) create(ctx context.Context, sub *subscription, tags []*tag, perCall int, bad cycle) error {
	var failed []*tag
	now := time.Now()
	for start := 0; start < len(tags); start += perCall {
		chunk := tags[start:min(start+perCall, len(tags))]
		items := make([]*ua.MonitoredItemCreateRequest, len(chunk))
		for i, t := range chunk {
			items[i] = s.e.itemRequest(t)
		}
		req := &ua.CreateMonitoredItemsRequest{
			SubscriptionID:     sub.id,
			TimestampsToReturn: ua.TimestampsToReturnSource, // the server timestamp is not used when the source one is given
			ItemsToCreate:      items,
		}
		var res *ua.CreateMonitoredItemsResponse
		if err := s.c.Send(ctx, req, func(v ua.Response) error { return assign(v, &res) }); err != nil {
			return fmt.Errorf("create monitored items: %w", err)
		}
		if len(res.Results) != len(chunk) {
			return fmt.Errorf("create monitored items: server answered %d results for %d items", len(res.Results), len(chunk))
		}
		s.mu.Lock()
		for i, r := range res.Results {
			t := chunk[i]
			if quality(r.StatusCode) == reading.Bad {
				failed = append(failed, t)
				bad[t.dev] = append(bad[t.dev], reading.Reading{Tag: t.name, Unit: t.unit,
					Quality: reading.Bad, Error: statusName(r.StatusCode), TS: now})
				s.e.log.Warn("opcua monitored item rejected", "device", t.device, "tag", t.name,
					"node_id", t.id.String(), "status", statusName(r.StatusCode))
				continue
			}
			sub.active[t.handle] = t
		}
		s.mu.Unlock()
	}
	s.mu.Lock()
	sub.failed = failed
	s.mu.Unlock()
	return nil
}

// afterCreate publishes the rejected items as bad readings and sets each
// device "ok" when at least one of its tags is collected, else
// "error: <first tag's reason>".
func (s *subSession) afterCreate(ctx context.Context, bad cycle) {
	s.e.flush(ctx, time.Now(), bad)
	s.mu.Lock()
	good := map[string]bool{}
	nActive, nFailed := 0, 0
	for _, sub := range s.subs {
		for _, t := range sub.active {
			good[t.device] = true
		}
		nActive += len(sub.active)
		nFailed += len(sub.failed)
	}
	s.mu.Unlock()
	for i, d := range s.e.devices {
		switch {
		case good[d]:
			s.e.sink.SetDeviceStatus(d, "ok")
		case len(bad[i]) > 0:
			s.e.sink.SetDeviceStatus(d, "error: "+bad[i][0].Error)
		}
	}
	s.e.log.Info("opcua monitored items", "subscriptions", len(s.subs), "ok", nActive, "rejected", nFailed)
}

// retryLoop periodically tries to create the rejected items again (a node
// that appears later, a server that was still loading its address space).
func (s *subSession) retryLoop(ctx context.Context, perCall int) error {
	tk := time.NewTicker(s.e.opt.itemRetry)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tk.C:
		}
		s.mu.Lock()
		retry := map[*subscription][]*tag{}
		for _, sub := range s.subs {
			if len(sub.failed) > 0 {
				retry[sub] = sub.failed
			}
		}
		s.mu.Unlock()
		if len(retry) == 0 {
			continue
		}
		bad := s.e.newCycle()
		for sub, tags := range retry {
			s.e.log.Info("opcua retrying rejected monitored items", "subscription", sub.id, "count", len(tags))
			if err := s.create(ctx, sub, tags, perCall, bad); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
		}
		s.afterCreate(ctx, bad)
	}
}

// errSilent is returned when a subscription stopped answering.
var errSilent = errors.New("subscription silent past its keep-alive")

// sender keeps one Publish request in flight and passes the responses on.
func (s *subSession) sender(ctx context.Context, out chan<- *ua.PublishResponse) error {
	for {
		s.mu.Lock()
		acks := s.acks
		s.acks = nil
		s.mu.Unlock()
		req := &ua.PublishRequest{SubscriptionAcknowledgements: acks}
		if req.SubscriptionAcknowledgements == nil {
			req.SubscriptionAcknowledgements = []*ua.SubscriptionAcknowledgement{}
		}
		var res *ua.PublishResponse
		err := s.c.Send(ctx, req, func(v ua.Response) error { return assign(v, &res) })
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			// Not delivered: acknowledge with the next request.
			s.mu.Lock()
			s.acks = append(s.acks, acks...)
			s.mu.Unlock()
			switch {
			case errors.Is(err, ua.StatusBadTooManyPublishRequests):
				// The server keeps fewer requests than we send; this
				// sender is one too many.
				return nil
			case errors.Is(err, ua.StatusBadTimeout):
				// The server let the request expire; the watchdog
				// in process tells a dead subscription.
				continue
			}
			return fmt.Errorf("publish: %w", err)
		}
		select {
		case out <- res:
		case <-ctx.Done():
			return nil
		}
	}
}

// process handles Publish responses in arrival order: acknowledges
// notifications, publishes one batch per device per publishing cycle, and
// returns when a subscription fails (a bad status change, or no response,
// not even a keep-alive, within its keep-alive period).
func (s *subSession) process(ctx context.Context, in <-chan *ua.PublishResponse) error {
	tk := time.NewTicker(time.Second)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-tk.C:
			s.mu.Lock()
			for _, sub := range s.subs {
				if d := now.Sub(sub.lastSeen); d > sub.silence {
					s.mu.Unlock()
					return fmt.Errorf("%w: subscription %d, nothing for %s", errSilent, sub.id, d.Round(time.Second))
				}
			}
			s.mu.Unlock()
			s.e.heartbeats(ctx, now)
		case res := <-in:
			if err := s.handle(ctx, res); err != nil {
				return err
			}
		}
	}
}

func (s *subSession) handle(ctx context.Context, res *ua.PublishResponse) error {
	now := time.Now()
	s.mu.Lock()
	sub := s.subs[res.SubscriptionID]
	msg := res.NotificationMessage
	if sub == nil || msg == nil {
		s.mu.Unlock()
		return nil
	}
	sub.lastSeen = now
	if len(msg.NotificationData) > 0 {
		s.acks = append(s.acks, &ua.SubscriptionAcknowledgement{SubscriptionID: sub.id, SequenceNumber: msg.SequenceNumber})
	}
	for _, nd := range msg.NotificationData {
		if nd == nil {
			continue
		}
		switch x := nd.Value.(type) {
		case *ua.DataChangeNotification:
			for _, it := range x.MonitoredItems {
				t := sub.active[it.ClientHandle]
				if t == nil {
					continue
				}
				rs := sub.got[t.dev]
				if rs == nil {
					rs = make([]reading.Reading, 0, len(s.e.byDev[t.device]))
				}
				sub.got[t.dev] = append(rs, makeReading(t, it.Value, now, s.e.lim))
			}
		case *ua.StatusChangeNotification:
			if quality(x.Status) == reading.Bad {
				s.mu.Unlock()
				return fmt.Errorf("subscription %d status changed to %s", sub.id, statusName(x.Status))
			}
		}
	}
	s.mu.Unlock()
	if res.MoreNotifications {
		return nil // the rest of this cycle follows
	}
	ts := msg.PublishTime
	if ts.IsZero() {
		ts = now
	}
	s.e.flush(ctx, ts, sub.got)
	// The sink keeps no readings: each device's slice serves the next cycle.
	for d, rs := range sub.got {
		clear(rs)
		sub.got[d] = rs[:0]
	}
	return nil
}
