package opcua

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gopcua/opcua/ua"

	"fieldgate/collectors/reading"
)

// specName undoes gopcua's Go-style initialisms so status names read as in
// the OPC UA specification (BadNodeIdUnknown, BadTcpEndpointUrlInvalid).
var specName = strings.NewReplacer("ID", "Id", "URI", "Uri", "URL", "Url", "TCP", "Tcp")

// statusName is the specification's symbolic name of an OPC UA status code
// ("BadNodeIdUnknown"), or its hex value when the code is unknown.
func statusName(s ua.StatusCode) string {
	d, ok := ua.StatusCodes[s]
	if !ok || d.Name == "" {
		// Info bits (overflow, limits) are in the low word; the name is in
		// the high one.
		d, ok = ua.StatusCodes[s&0xFFFF0000]
	}
	if !ok || d.Name == "" {
		return fmt.Sprintf("0x%08X", uint32(s))
	}
	return specName.Replace(strings.TrimPrefix(d.Name, "Status"))
}

// quality maps the severity bits of a status code (Part 4, 7.39): 00 good,
// 01 uncertain, 10 and 11 bad.
func quality(s ua.StatusCode) reading.Quality {
	switch uint32(s) >> 30 {
	case 0:
		return reading.Good
	case 1:
		return reading.Uncertain
	}
	return reading.Bad
}

// errorText names the error behind err for a reading's `error` field: the
// status name for an OPC UA status, the message otherwise.
func errorText(err error) string {
	var s ua.StatusCode
	if !asStatus(err, &s) {
		return err.Error()
	}
	msg := err.Error()
	if msg == s.Error() {
		return statusName(s)
	}
	// Keep the context ("connect to …"), shorten the status to its name.
	return strings.Replace(msg, s.Error(), statusName(s), 1)
}

// makeReading turns a data value into a reading of tag t. now is used when
// the server gives neither a source nor a server timestamp. A value larger
// than lim becomes a bad reading that says which limit it passed.
func makeReading(t *tag, dv *ua.DataValue, now time.Time, lim Limits) reading.Reading {
	r := reading.Reading{Tag: t.name, Unit: t.unit, TS: now}
	if dv == nil {
		r.Quality, r.Error = reading.Bad, "no value"
		return r
	}
	switch {
	case dv.EncodingMask&ua.DataValueSourceTimestamp != 0 && !dv.SourceTimestamp.IsZero():
		r.TS = dv.SourceTimestamp
	case dv.EncodingMask&ua.DataValueServerTimestamp != 0 && !dv.ServerTimestamp.IsZero():
		r.TS = dv.ServerTimestamp
	}
	st := ua.StatusOK
	if dv.EncodingMask&ua.DataValueStatusCode != 0 {
		st = dv.Status
	}
	r.Quality = quality(st)
	if r.Quality == reading.Bad {
		r.Error = statusName(st)
		return r
	}
	if r.Quality == reading.Uncertain {
		r.Error = statusName(st)
	}
	if dv.Value == nil {
		if r.Quality == reading.Good {
			r.Quality, r.Error = reading.Bad, "no value"
		}
		return r
	}
	v := dv.Value.Value()
	if reason := lim.tooLarge(v); reason != "" {
		r.Quality, r.Error = reading.Bad, reason
		return r
	}
	r.Value = convertValue(v)
	if text, ok := r.Value.(string); ok && int64(len(text)) > int64(lim.MaxStringBytes) {
		// An array or structure whose elements pass the limits one by one
		// can still make a long text.
		r.Value, r.Quality = nil, reading.Bad
		r.Error = fmt.Sprintf("value's text of %d bytes is larger than limits.max_string_bytes (%d)", len(text), lim.MaxStringBytes)
	}
	return r
}

// convertValue maps an OPC UA variant value onto the reading model's types
// (nil, bool, int64, uint64, float64, string). Signed integers become
// int64, unsigned ones uint64, Float is widened through its shortest decimal
// form (so 1.1f stays 1.1), and everything else becomes a string: date-times
// as RFC 3339, byte strings as base64, localized text as its text, node ids
// in their OPC UA syntax, arrays and structures as JSON.
func convertValue(v any) any {
	switch x := v.(type) {
	case nil:
		return nil
	case bool:
		return x
	case int8:
		return int64(x)
	case int16:
		return int64(x)
	case int32:
		return int64(x)
	case int64:
		return x
	case uint8:
		return uint64(x)
	case uint16:
		return uint64(x)
	case uint32:
		return uint64(x)
	case uint64:
		return x
	case float32:
		f, _ := strconv.ParseFloat(strconv.FormatFloat(float64(x), 'g', -1, 32), 64)
		return f
	case float64:
		return x
	case string:
		return x
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case []byte:
		return base64.StdEncoding.EncodeToString(x)
	case *ua.LocalizedText:
		if x == nil {
			return nil
		}
		return x.Text
	case *ua.QualifiedName:
		if x == nil {
			return nil
		}
		return x.Name
	case *ua.NodeID:
		if x == nil {
			return nil
		}
		return x.String()
	case *ua.ExpandedNodeID:
		if x == nil {
			return nil
		}
		return x.String()
	case ua.StatusCode:
		return statusName(x)
	case *ua.GUID:
		if x == nil {
			return nil
		}
		return x.String()
	case *ua.XMLElement:
		if x == nil {
			return nil
		}
		return string(*x)
	case *ua.ExtensionObject:
		if x == nil || x.Value == nil {
			return nil
		}
		return jsonString(x.Value)
	}
	return jsonString(v)
}

func jsonString(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
