package opcua

import (
	"context"
	"fmt"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"

	"fieldgate/collectors/reading"
)

// runPoll reads every node each POLL_INTERVAL in Read requests of at most
// lim.perRead nodes and publishes one batch per device per poll. A request
// the server refuses as a whole (e.g. BadTooManyOperations) marks its nodes
// bad; a failed connection ends the session.
func (e *Engine) runPoll(ctx context.Context, c *opcua.Client, lim limits) error {
	nodes := make([]*ua.ReadValueID, len(e.tags))
	for i, t := range e.tags {
		nodes[i] = &ua.ReadValueID{NodeID: t.id, AttributeID: ua.AttributeIDValue, DataEncoding: &ua.QualifiedName{}}
	}
	tk := time.NewTicker(e.opt.poll)
	defer tk.Stop()
	timeout := e.timing().request
	for {
		if err := e.pollOnce(ctx, c, nodes, lim.perRead, timeout); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tk.C:
		}
	}
}

func (e *Engine) pollOnce(ctx context.Context, c *opcua.Client, nodes []*ua.ReadValueID, perRead int, timeout time.Duration) error {
	now := time.Now()
	got := e.newCycle()
	for start := 0; start < len(nodes); start += perRead {
		end := min(start+perRead, len(nodes))
		rctx, cancel := context.WithTimeout(ctx, timeout)
		res, err := c.Read(rctx, &ua.ReadRequest{
			NodesToRead:        nodes[start:end],
			TimestampsToReturn: ua.TimestampsToReturnSource, // the server timestamp is not used when the source one is given
		})
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		var st ua.StatusCode
		switch {
		case err == nil && len(res.Results) != end-start:
			err = fmt.Errorf("read: server answered %d results for %d nodes", len(res.Results), end-start)
			fallthrough
		case err != nil && !(asStatus(err, &st) && isOperationStatus(st)):
			return fmt.Errorf("read: %w", err)
		case err != nil:
			for _, t := range e.tags[start:end] {
				got[t.dev] = append(got[t.dev], reading.Reading{Tag: t.name, Unit: t.unit,
					Quality: reading.Bad, Error: statusName(st), TS: now})
			}
			continue
		}
		for i, dv := range res.Results {
			t := e.tags[start+i]
			got[t.dev] = append(got[t.dev], makeReading(t, dv, now, e.lim))
		}
	}
	e.flush(ctx, now, got)
	for i, d := range e.devices {
		status := "ok"
		rs := got[i]
		if len(rs) > 0 {
			status = "error: " + rs[0].Error
			for _, r := range rs {
				if r.Quality != reading.Bad {
					status = "ok"
					break
				}
			}
		}
		e.sink.SetDeviceStatus(d, status)
	}
	return nil
}

// isOperationStatus reports whether a Read service error concerns the
// request's content rather than the session or connection, so polling can
// go on.
func isOperationStatus(s ua.StatusCode) bool {
	switch s {
	case ua.StatusBadTooManyOperations, ua.StatusBadNothingToDo, ua.StatusBadEncodingLimitsExceeded,
		ua.StatusBadResponseTooLarge, ua.StatusBadRequestTooLarge, ua.StatusBadTCPMessageTooLarge, ua.StatusBadMaxAgeInvalid,
		ua.StatusBadTimestampsToReturnInvalid:
		return true
	}
	return false
}
