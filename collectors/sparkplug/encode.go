package sparkplug

import (
	"encoding/base64"
	"fmt"
	"math"
	"time"

	"google.golang.org/protobuf/proto"

	"fieldgate/collectors/reading"
	pb "fieldgate/collectors/sparkplug/sparkplugpb"
)

// Quality codes of the Sparkplug `Quality` property (spec 6.4.5).
const (
	QualityBad   = 0
	QualityGood  = 192
	QualityStale = 500
)

// Names of the node metrics and metric properties fieldgate uses.
const (
	MetricBdSeq   = "bdSeq"
	MetricRebirth = "Node Control/Rebirth"
	PropQuality   = "Quality"
	PropError     = "error"   // the reading's error text, with a quality other than good
	PropUnit      = "engUnit" // the tag's unit, in births (Ignition's property name)
)

// dataType maps a tag type onto its Sparkplug datatype; TypeUnknown goes
// by the Go type of the value (nil: unknown).
func dataType(t reading.DataType, v any) pb.DataType {
	switch t {
	case reading.TypeBool:
		return pb.DataType_Boolean
	case reading.TypeInt8:
		return pb.DataType_Int8
	case reading.TypeInt16:
		return pb.DataType_Int16
	case reading.TypeInt32:
		return pb.DataType_Int32
	case reading.TypeInt64:
		return pb.DataType_Int64
	case reading.TypeUint8:
		return pb.DataType_UInt8
	case reading.TypeUint16:
		return pb.DataType_UInt16
	case reading.TypeUint32:
		return pb.DataType_UInt32
	case reading.TypeUint64:
		return pb.DataType_UInt64
	case reading.TypeFloat32:
		return pb.DataType_Float
	case reading.TypeFloat64:
		return pb.DataType_Double
	case reading.TypeString:
		return pb.DataType_String
	case reading.TypeDateTime:
		return pb.DataType_DateTime
	case reading.TypeBytes:
		return pb.DataType_Bytes
	}
	switch v.(type) {
	case bool:
		return pb.DataType_Boolean
	case int64, int:
		return pb.DataType_Int64
	case uint64:
		return pb.DataType_UInt64
	case float32:
		return pb.DataType_Float
	case float64:
		return pb.DataType_Double
	case string:
		return pb.DataType_String
	}
	return pb.DataType_Unknown
}

// setValue puts v into m as datatype dt, or sets is_null when v is nil or
// does not fit dt (a value of another type than the metric's is reported
// as null rather than sent under a wrong type).
func setValue(m *pb.Payload_Metric, dt pb.DataType, v any) bool {
	m.Datatype = proto.Uint32(uint32(dt))
	if v == nil {
		m.IsNull = proto.Bool(true)
		return true
	}
	ok := true
	switch dt {
	case pb.DataType_Boolean:
		b, isBool := v.(bool)
		ok = isBool
		m.Value = &pb.Payload_Metric_BooleanValue{BooleanValue: b}
	case pb.DataType_Int8, pb.DataType_Int16, pb.DataType_Int32:
		// Two's complement in 32 bits (Tahu: Int32Array([intValue])).
		i, isInt := asInt(v)
		lo, hi := intLimits(dt)
		ok = isInt && i >= lo && i <= hi
		m.Value = &pb.Payload_Metric_IntValue{IntValue: uint32(int32(i))}
	case pb.DataType_UInt8, pb.DataType_UInt16:
		u, isUint := asUint(v)
		ok = isUint && (dt == pb.DataType_UInt16 && u <= math.MaxUint16 || u <= math.MaxUint8)
		m.Value = &pb.Payload_Metric_IntValue{IntValue: uint32(u)}
	case pb.DataType_Int64:
		i, isInt := asInt(v)
		ok = isInt
		m.Value = &pb.Payload_Metric_LongValue{LongValue: uint64(i)}
	case pb.DataType_UInt32, pb.DataType_UInt64:
		u, isUint := asUint(v)
		ok = isUint && (dt == pb.DataType_UInt64 || u <= math.MaxUint32)
		m.Value = &pb.Payload_Metric_LongValue{LongValue: u}
	case pb.DataType_Float:
		f, isNum := reading.AsFloat(v)
		ok = isNum
		m.Value = &pb.Payload_Metric_FloatValue{FloatValue: float32(f)}
	case pb.DataType_Double:
		f, isNum := reading.AsFloat(v)
		ok = isNum
		m.Value = &pb.Payload_Metric_DoubleValue{DoubleValue: f}
	case pb.DataType_String, pb.DataType_Text:
		s, isStr := v.(string)
		ok = isStr
		m.Value = &pb.Payload_Metric_StringValue{StringValue: s}
	case pb.DataType_DateTime:
		s, isStr := v.(string)
		t, err := time.Parse(time.RFC3339Nano, s)
		ok = isStr && err == nil
		m.Value = &pb.Payload_Metric_LongValue{LongValue: uint64(t.UnixMilli())}
	case pb.DataType_Bytes:
		s, isStr := v.(string)
		b, err := base64.StdEncoding.DecodeString(s)
		ok = isStr && err == nil
		m.Value = &pb.Payload_Metric_BytesValue{BytesValue: b}
	default:
		ok = false
	}
	if !ok {
		m.Value = nil
		m.IsNull = proto.Bool(true)
	}
	return ok
}

func intLimits(dt pb.DataType) (int64, int64) {
	switch dt {
	case pb.DataType_Int8:
		return math.MinInt8, math.MaxInt8
	case pb.DataType_Int16:
		return math.MinInt16, math.MaxInt16
	}
	return math.MinInt32, math.MaxInt32
}

func asInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int64:
		return x, true
	case int:
		return int64(x), true
	case uint64:
		return int64(x), x <= math.MaxInt64
	case float64:
		return int64(x), x == math.Trunc(x) && math.Abs(x) < 1<<63
	}
	return 0, false
}

func asUint(v any) (uint64, bool) {
	switch x := v.(type) {
	case uint64:
		return x, true
	case int64:
		return uint64(x), x >= 0
	case int:
		return uint64(x), x >= 0
	case float64:
		return uint64(x), x == math.Trunc(x) && x >= 0 && x < 1<<64
	}
	return 0, false
}

// metricValue reads a command metric's value as the Go value Sparkplug
// sent, by its datatype (or its oneof when the datatype is missing).
func metricValue(m *pb.Payload_Metric, dt pb.DataType) (any, error) {
	if m.GetIsNull() {
		return nil, nil
	}
	switch x := m.Value.(type) {
	case *pb.Payload_Metric_BooleanValue:
		return x.BooleanValue, nil
	case *pb.Payload_Metric_IntValue:
		switch dt {
		case pb.DataType_Int8, pb.DataType_Int16, pb.DataType_Int32:
			return int64(int32(x.IntValue)), nil
		}
		return uint64(x.IntValue), nil
	case *pb.Payload_Metric_LongValue:
		if dt == pb.DataType_Int64 {
			return int64(x.LongValue), nil
		}
		return x.LongValue, nil
	case *pb.Payload_Metric_FloatValue:
		return float64(x.FloatValue), nil
	case *pb.Payload_Metric_DoubleValue:
		return x.DoubleValue, nil
	case *pb.Payload_Metric_StringValue:
		return x.StringValue, nil
	}
	return nil, fmt.Errorf("metric value of kind %T is not supported", m.Value)
}

// qualityCode maps a reading's quality onto the Sparkplug codes. An
// uncertain value is usable: it goes as good with its status in `error`.
func qualityCode(q reading.Quality) int32 {
	if q == reading.Bad {
		return QualityBad
	}
	return QualityGood
}

// properties returns the property set of a metric: Quality (and error)
// when with is set or the reading is not good, engUnit in births.
func properties(r *reading.Reading, quality int32, withQuality bool, unit string) *pb.Payload_PropertySet {
	ps := &pb.Payload_PropertySet{}
	if withQuality {
		ps.Keys = append(ps.Keys, PropQuality)
		ps.Values = append(ps.Values, &pb.Payload_PropertyValue{
			Type:  proto.Uint32(uint32(pb.DataType_Int32)),
			Value: &pb.Payload_PropertyValue_IntValue{IntValue: uint32(quality)},
		})
	}
	if r != nil && r.Error != "" {
		ps.Keys = append(ps.Keys, PropError)
		ps.Values = append(ps.Values, &pb.Payload_PropertyValue{
			Type:  proto.Uint32(uint32(pb.DataType_String)),
			Value: &pb.Payload_PropertyValue_StringValue{StringValue: r.Error},
		})
	}
	if unit != "" {
		ps.Keys = append(ps.Keys, PropUnit)
		ps.Values = append(ps.Values, &pb.Payload_PropertyValue{
			Type:  proto.Uint32(uint32(pb.DataType_String)),
			Value: &pb.Payload_PropertyValue_StringValue{StringValue: unit},
		})
	}
	if len(ps.Keys) == 0 {
		return nil
	}
	return ps
}

func millis(t time.Time) *uint64 {
	if t.IsZero() {
		t = time.Now()
	}
	return proto.Uint64(uint64(t.UnixMilli()))
}

// deathPayload is NDEATH: one metric, bdSeq (Int64), no seq.
func deathPayload(bdSeq uint64, now time.Time) []byte {
	p := &pb.Payload{Timestamp: millis(now), Metrics: []*pb.Payload_Metric{bdSeqMetric(bdSeq, now)}}
	b, _ := proto.Marshal(p)
	return b
}

func bdSeqMetric(bdSeq uint64, now time.Time) *pb.Payload_Metric {
	return &pb.Payload_Metric{Name: proto.String(MetricBdSeq), Timestamp: millis(now),
		Datatype: proto.Uint32(uint32(pb.DataType_Int64)), Value: &pb.Payload_Metric_LongValue{LongValue: bdSeq}}
}

// nodeBirth is NBIRTH: bdSeq and Node Control/Rebirth (false, never
// aliased, so any host can ask for a rebirth).
func nodeBirth(bdSeq uint64, now time.Time) *pb.Payload {
	return &pb.Payload{Timestamp: millis(now), Seq: proto.Uint64(0), Metrics: []*pb.Payload_Metric{
		bdSeqMetric(bdSeq, now),
		{Name: proto.String(MetricRebirth), Timestamp: millis(now),
			Datatype: proto.Uint32(uint32(pb.DataType_Boolean)), Value: &pb.Payload_Metric_BooleanValue{BooleanValue: false}},
	}}
}
