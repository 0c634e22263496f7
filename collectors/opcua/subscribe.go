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

// subscription is one session's subscription and its monitored items.
//
// The engine drives the Publish service itself instead of using gopcua's
// Subscribe, because gopcua hides keep-alive messages: without them a
// subscription that went silent cannot be told from one whose values do not
// change.
type subscription struct {
	e       *Engine
	c       *opcua.Client
	id      uint32
	silence time.Duration // no Publish response for this long: the subscription is dead

	mu     sync.Mutex
	active map[uint32]*tag // client handle → tag, items the server accepted
	failed []*tag          // items the server rejected, retried every itemRetry
}

func (e *Engine) runSubscribe(ctx context.Context, c *opcua.Client, lim limits) error {
	tm := e.timing()
	req := &ua.CreateSubscriptionRequest{
		RequestedPublishingInterval: float64(tm.publishing) / float64(time.Millisecond),
		RequestedLifetimeCount:      tm.lifetime,
		RequestedMaxKeepAliveCount:  tm.keepAlive,
		// Bounded so a cycle of 10,000 changes travels as several moderate
		// messages (MoreNotifications) instead of one huge one.
		MaxNotificationsPerPublish: uint32(e.opt.maxBatch),
		PublishingEnabled:          true,
	}
	var res *ua.CreateSubscriptionResponse
	if err := c.Send(ctx, req, func(v ua.Response) error { return assign(v, &res) }); err != nil {
		return fmt.Errorf("create subscription: %w", err)
	}
	revPub := time.Duration(res.RevisedPublishingInterval * float64(time.Millisecond))
	if revPub <= 0 {
		revPub = tm.publishing
	}
	ka := max(res.RevisedMaxKeepAliveCount, 1)
	s := &subscription{
		e: e, c: c, id: res.SubscriptionID,
		// One keep-alive period plus slack for a loaded server and network.
		silence: time.Duration(ka)*revPub + max(revPub, 5*time.Second),
		active:  map[uint32]*tag{},
	}
	e.log.Info("opcua subscription created", "id", s.id, "publishing_interval", revPub, "keepalive_count", ka)

	if err := s.create(ctx, e.tags, lim.perCall); err != nil {
		return err
	}
	s.mu.Lock()
	n, nf := len(s.active), len(s.failed)
	s.mu.Unlock()
	e.log.Info("opcua monitored items created", "ok", n, "rejected", nf)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.publishLoop(gctx) })
	g.Go(func() error { return s.retryLoop(gctx, lim.perCall) })
	return g.Wait()
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

func (s *subscription) itemRequest(t *tag) *ua.MonitoredItemCreateRequest {
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
			QueueSize:        s.e.cfg.QueueSize,
			DiscardOldest:    true,
		},
	}
}

// create creates monitored items for tags in batches of perCall. Items the
// server rejects are published as bad readings and kept for retryLoop; a
// failed request (not a rejected item) is returned.
func (s *subscription) create(ctx context.Context, tags []*tag, perCall int) error {
	var failed []*tag
	bad := map[string][]reading.Reading{}
	now := time.Now()
	for start := 0; start < len(tags); start += perCall {
		chunk := tags[start:min(start+perCall, len(tags))]
		items := make([]*ua.MonitoredItemCreateRequest, len(chunk))
		for i, t := range chunk {
			items[i] = s.itemRequest(t)
		}
		req := &ua.CreateMonitoredItemsRequest{
			SubscriptionID:     s.id,
			TimestampsToReturn: ua.TimestampsToReturnBoth,
			ItemsToCreate:      items,
		}
		var res *ua.CreateMonitoredItemsResponse
		if err := s.c.Send(ctx, req, func(v ua.Response) error { return assign(v, &res) }); err != nil {
			return fmt.Errorf("create monitored items %d..%d: %w", start, start+len(chunk)-1, err)
		}
		if len(res.Results) != len(chunk) {
			return fmt.Errorf("create monitored items: server answered %d results for %d items", len(res.Results), len(chunk))
		}
		s.mu.Lock()
		for i, r := range res.Results {
			t := chunk[i]
			if quality(r.StatusCode) == reading.Bad {
				failed = append(failed, t)
				bad[t.device] = append(bad[t.device], reading.Reading{Tag: t.name, Unit: t.unit,
					Quality: reading.Bad, Error: statusName(r.StatusCode), TS: now})
				s.e.log.Warn("opcua monitored item rejected", "device", t.device, "tag", t.name,
					"node_id", t.id.String(), "status", statusName(r.StatusCode))
				continue
			}
			s.active[t.handle] = t
		}
		s.mu.Unlock()
	}
	s.mu.Lock()
	s.failed = failed
	s.mu.Unlock()
	s.e.flush(ctx, now, bad)
	s.e.updateStatus(func(t *tag) bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		_, ok := s.active[t.handle]
		return ok
	}, bad)
	return nil
}

// updateStatus sets each device "ok" when at least one of its tags is
// collected, else "error: <first tag's reason>".
func (e *Engine) updateStatus(ok func(*tag) bool, bad map[string][]reading.Reading) {
	for _, d := range e.devices {
		good := false
		for _, t := range e.byDev[d] {
			if ok(t) {
				good = true
				break
			}
		}
		switch {
		case good:
			e.sink.SetDeviceStatus(d, "ok")
		case len(bad[d]) > 0:
			e.sink.SetDeviceStatus(d, "error: "+bad[d][0].Error)
		}
	}
}

// retryLoop periodically tries to create the rejected items again (a node
// that appears later, a server that was still loading its address space).
func (s *subscription) retryLoop(ctx context.Context, perCall int) error {
	tk := time.NewTicker(s.e.opt.itemRetry)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tk.C:
		}
		s.mu.Lock()
		retry := s.failed
		s.mu.Unlock()
		if len(retry) == 0 {
			continue
		}
		s.e.log.Info("opcua retrying rejected monitored items", "count", len(retry))
		if err := s.create(ctx, retry, perCall); err != nil {
			return err
		}
	}
}

// errSilent is returned when the subscription stopped answering.
var errSilent = errors.New("subscription silent past its keep-alive")

// publishLoop sends Publish requests, acknowledges notifications, publishes
// one batch per device per publishing cycle and returns when the
// subscription fails: an error response, a bad status change, or no
// response (not even a keep-alive) within the keep-alive period.
func (s *subscription) publishLoop(ctx context.Context) error {
	var acks []*ua.SubscriptionAcknowledgement
	got := map[string][]reading.Reading{}
	for {
		req := &ua.PublishRequest{SubscriptionAcknowledgements: acks}
		if req.SubscriptionAcknowledgements == nil {
			req.SubscriptionAcknowledgements = []*ua.SubscriptionAcknowledgement{}
		}
		pctx, cancel := context.WithTimeout(ctx, s.silence)
		var res *ua.PublishResponse
		err := s.c.Send(pctx, req, func(v ua.Response) error { return assign(v, &res) })
		expired := pctx.Err() != nil
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if expired {
				return fmt.Errorf("%w (%s): %v", errSilent, s.silence, err)
			}
			return fmt.Errorf("publish: %w", err)
		}
		acks = acks[:0]
		msg := res.NotificationMessage
		if msg == nil {
			continue
		}
		if len(msg.NotificationData) > 0 {
			acks = append(acks, &ua.SubscriptionAcknowledgement{SubscriptionID: res.SubscriptionID, SequenceNumber: msg.SequenceNumber})
		}
		now := time.Now()
		for _, nd := range msg.NotificationData {
			if nd == nil {
				continue
			}
			switch x := nd.Value.(type) {
			case *ua.DataChangeNotification:
				s.mu.Lock()
				for _, it := range x.MonitoredItems {
					t := s.active[it.ClientHandle]
					if t == nil {
						continue
					}
					got[t.device] = append(got[t.device], makeReading(t, it.Value, now))
				}
				s.mu.Unlock()
			case *ua.StatusChangeNotification:
				if quality(x.Status) == reading.Bad {
					return fmt.Errorf("subscription %d status changed to %s", s.id, statusName(x.Status))
				}
			}
		}
		if res.MoreNotifications {
			continue // the rest of this cycle follows
		}
		ts := msg.PublishTime
		if ts.IsZero() {
			ts = now
		}
		s.e.flush(ctx, ts, got)
		clear(got)
	}
}
