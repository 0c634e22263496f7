package opcua

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"

	"fieldgate/collectors/command"
	"fieldgate/collectors/reading"
)

// TypeSink is a Sink that wants to know each tag's type as soon as the
// server tells it (a Sparkplug edge node: births carry datatypes).
type TypeSink interface {
	SetTagType(device, tag string, t reading.DataType)
}

// setClient records the session's client (nil while there is none, with
// the reason) for writes.
func (e *Engine) setClient(c *opcua.Client, err error) {
	e.live.Lock()
	defer e.live.Unlock()
	e.client, e.downErr = c, err
}

// uaTypes maps the standard DataType node ids (namespace 0) onto tag types.
var uaTypes = map[uint32]reading.DataType{
	1: reading.TypeBool, 2: reading.TypeInt8, 3: reading.TypeUint8, 4: reading.TypeInt16,
	5: reading.TypeUint16, 6: reading.TypeInt32, 7: reading.TypeUint32, 8: reading.TypeInt64,
	9: reading.TypeUint64, 10: reading.TypeFloat32, 11: reading.TypeFloat64, 12: reading.TypeString,
	13: reading.TypeDateTime, 15: reading.TypeBytes,
	29:  reading.TypeInt32,    // Enumeration
	290: reading.TypeFloat64,  // Duration
	294: reading.TypeDateTime, // UtcTime
}

// typeOf maps a DataType attribute value; unknown (structures, abstract
// types) stays TypeUnknown.
func typeOf(dv *ua.DataValue) reading.DataType {
	if dv == nil || dv.Status != ua.StatusOK || dv.Value == nil {
		return reading.TypeUnknown
	}
	id, ok := dv.Value.Value().(*ua.NodeID)
	if !ok || id == nil || id.Namespace() != 0 {
		return reading.TypeUnknown
	}
	return uaTypes[id.IntID()]
}

// readTypes reads every node's DataType attribute (in requests of at most
// perRead nodes) and tells a TypeSink. A failure leaves the types unknown:
// values still flow, births go by the values.
func (e *Engine) readTypes(ctx context.Context, c *opcua.Client, perRead int) {
	for start := 0; start < len(e.tags); start += perRead {
		chunk := e.tags[start:min(start+perRead, len(e.tags))]
		nodes := make([]*ua.ReadValueID, len(chunk))
		for i, t := range chunk {
			nodes[i] = &ua.ReadValueID{NodeID: t.id, AttributeID: ua.AttributeIDDataType}
		}
		rctx, cancel := context.WithTimeout(ctx, e.timing().request)
		res, err := c.Read(rctx, &ua.ReadRequest{NodesToRead: nodes, TimestampsToReturn: ua.TimestampsToReturnNeither})
		cancel()
		if err != nil || len(res.Results) != len(chunk) {
			e.log.Debug("opcua data types unavailable", "err", err)
			return
		}
		ts, tell := e.sink.(TypeSink)
		for i, t := range chunk {
			dt := typeOf(res.Results[i])
			e.live.Lock()
			t.dtype = dt
			e.live.Unlock()
			if tell && dt != reading.TypeUnknown {
				ts.SetTagType(t.device, t.name, dt)
			}
		}
	}
}

// heartbeats publishes, per device, the unchanged values whose heartbeat
// is due (subscribe mode: the server reports changes only).
func (e *Engine) heartbeats(ctx context.Context, now time.Time) {
	if e.filter == nil {
		return
	}
	for _, d := range e.devices {
		if rs := e.filter.Heartbeats(d, now); len(rs) > 0 {
			if err := e.sink.Publish(ctx, reading.Batch{Device: d, TS: now, Readings: rs}); err != nil && ctx.Err() == nil {
				e.log.Error("publish batch", "device", d, "err", err)
			}
		}
	}
}

// Write implements command.Writer: each value is written with the node's
// own datatype (read from the server), then read back. Writes go on the
// session's secure channel next to the subscription or polling; a write
// without a session fails with the reason the session is down.
func (e *Engine) Write(ctx context.Context, device string, writes []command.Write) []command.Result {
	out := make([]command.Result, len(writes))
	e.live.Lock()
	c, down := e.client, e.downErr
	e.live.Unlock()
	for i, w := range writes {
		out[i].Tag = w.Tag.Name
		t := e.byKey[device+"\x00"+w.Tag.Name]
		switch {
		case t == nil:
			out[i].Err = fmt.Errorf("%w %q", command.ErrUnknownTag, w.Tag.Name)
			continue
		case !t.writable:
			out[i].Err = command.ErrNotWritable
			continue
		case c == nil:
			if down == nil {
				down = errors.New("no session yet")
			}
			out[i].Err = fmt.Errorf("not connected to the OPC UA server: %s", errorText(down))
			continue
		}
		out[i].ReadBack, out[i].Err = e.writeNode(ctx, c, t, w.Value)
	}
	return out
}

func (e *Engine) writeNode(ctx context.Context, c *opcua.Client, t *tag, v any) (any, error) {
	e.live.Lock()
	dt := t.dtype
	e.live.Unlock()
	if dt == reading.TypeUnknown {
		res, err := c.Read(ctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{NodeID: t.id, AttributeID: ua.AttributeIDDataType}}})
		if err != nil {
			return nil, requestError("read the node's data type", ctx, err)
		}
		if len(res.Results) == 1 {
			dt = typeOf(res.Results[0])
		}
		if dt == reading.TypeUnknown {
			return nil, fmt.Errorf("%w: the node's data type is not one fieldgate writes", command.ErrTypeMismatch)
		}
	}
	variant, err := variantFor(dt, v)
	if err != nil {
		return nil, err
	}
	res, err := c.Write(ctx, &ua.WriteRequest{NodesToWrite: []*ua.WriteValue{{
		NodeID: t.id, AttributeID: ua.AttributeIDValue,
		Value: &ua.DataValue{EncodingMask: ua.DataValueValue, Value: variant},
	}}})
	if err != nil {
		return nil, requestError("write", ctx, err)
	}
	if len(res.Results) != 1 {
		return nil, fmt.Errorf("write: server answered %d results for 1 node", len(res.Results))
	}
	if st := res.Results[0]; st != ua.StatusOK {
		return nil, fmt.Errorf("device refused the write: %s", statusName(st))
	}
	rr, err := c.Read(ctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{NodeID: t.id, AttributeID: ua.AttributeIDValue,
		DataEncoding: &ua.QualifiedName{}}}, TimestampsToReturn: ua.TimestampsToReturnSource})
	if err != nil {
		return nil, requestError("written, but reading it back failed", ctx, err)
	}
	if len(rr.Results) != 1 {
		return nil, errors.New("written, but the read-back answer is malformed")
	}
	r := makeReading(t, rr.Results[0], time.Now(), e.lim)
	if r.Quality == reading.Bad {
		return nil, fmt.Errorf("written, but reading it back failed: %s", r.Error)
	}
	return r.Value, nil
}

func requestError(doing string, ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", doing, command.ErrTimeout)
	}
	return fmt.Errorf("%s: %s", doing, errorText(err))
}

// variantFor converts a command value to the Go type of the node's data
// type, checking its range (command.Convert), as a variant.
func variantFor(dt reading.DataType, v any) (*ua.Variant, error) {
	if dt == reading.TypeDateTime || dt == reading.TypeBytes {
		return nil, fmt.Errorf("%w: writing OPC UA %s values is not supported", command.ErrTypeMismatch, dt)
	}
	cv, err := command.Convert(reading.Tag{Type: dt}, v)
	if err != nil {
		return nil, err
	}
	var x any
	switch dt {
	case reading.TypeBool, reading.TypeString, reading.TypeFloat64, reading.TypeInt64, reading.TypeUint64:
		x = cv
	case reading.TypeFloat32:
		x = float32(cv.(float64))
	case reading.TypeInt8:
		x = int8(cv.(int64))
	case reading.TypeInt16:
		x = int16(cv.(int64))
	case reading.TypeInt32:
		x = int32(cv.(int64))
	case reading.TypeUint8:
		x = uint8(cv.(uint64))
	case reading.TypeUint16:
		x = uint16(cv.(uint64))
	case reading.TypeUint32:
		x = uint32(cv.(uint64))
	default:
		return nil, fmt.Errorf("%w: writing OPC UA %s values is not supported", command.ErrTypeMismatch, dt)
	}
	variant, err := ua.NewVariant(x)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", command.ErrTypeMismatch, err)
	}
	return variant, nil
}
