package opcua

import (
	"fmt"
	"reflect"

	"github.com/gopcua/opcua/ua"
	"github.com/gopcua/opcua/uacp"
	"gopkg.in/yaml.v3"

	"fieldgate/collectors/configfile"
	"fieldgate/collectors/runenv"
)

// Limits bound what an OPC UA server can make the collector hold. A value
// larger than a limit becomes one bad reading naming the limit; the other
// tags are unaffected. In YAML (the `limits:` mapping) sizes take a unit:
// 64KiB, 4MiB.
type Limits struct {
	Pos configfile.Pos `yaml:"-"`
	// MaxStringBytes caps a String, XmlElement or LocalizedText value, and
	// the JSON text of an array or structure; default 64 KiB.
	MaxStringBytes Size `yaml:"max_string_bytes"`
	// MaxByteStringBytes caps a ByteString value (before base64); default
	// 64 KiB.
	MaxByteStringBytes Size `yaml:"max_bytestring_bytes"`
	// MaxArrayLength caps the elements of an array value; default 10,000,
	// at most 65,535 (gopcua refuses longer arrays in any message, which
	// fails the whole request rather than one tag).
	MaxArrayLength int `yaml:"max_array_length"`
	// MaxMessageBytes is the largest message the collector asks the server
	// to send (OPC UA Hello: MaxMessageSize, in chunks of 64 KiB); default
	// 4 MiB, between 64 KiB and 64 MiB. A conforming server answers a
	// request whose response would be larger with BadResponseTooLarge.
	MaxMessageBytes Size `yaml:"max_message_bytes"`
}

// DefaultLimits are the limits of a collector whose file sets none.
var DefaultLimits = Limits{
	MaxStringBytes:     64 << 10,
	MaxByteStringBytes: 64 << 10,
	MaxArrayLength:     10_000,
	MaxMessageBytes:    4 << 20,
}

// Bounds of the limits themselves.
const (
	// gopcuaMaxArray is gopcua's own cap on variant arrays (ua.MaxVariantArrayLength).
	gopcuaMaxArray  = 0xffff
	chunkBytes      = 0xffff // receive and send buffer (chunk) size
	minMessageBytes = 64 << 10
	maxMessageBytes = 64 << 20
)

// Size is a byte count written as a number or with a unit (64KiB, 4MiB,
// 500KB; runenv.ParseSize).
type Size int64

// UnmarshalYAML reads a size.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a size such as 65536 or 64KiB")
	}
	v, err := runenv.ParseSize(n.Value)
	if err != nil || v < 0 {
		return fmt.Errorf("invalid size %q (want e.g. 65536, 64KiB, 4MiB)", n.Value)
	}
	*s = Size(v)
	return nil
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	if l.MaxStringBytes > 0 {
		d.MaxStringBytes = l.MaxStringBytes
	}
	if l.MaxByteStringBytes > 0 {
		d.MaxByteStringBytes = l.MaxByteStringBytes
	}
	if l.MaxArrayLength > 0 {
		d.MaxArrayLength = l.MaxArrayLength
	}
	if l.MaxMessageBytes > 0 {
		d.MaxMessageBytes = l.MaxMessageBytes
	}
	return d
}

func (l Limits) validate(errs *configfile.Errors, c *Config) {
	at := func(key string) configfile.Pos { return c.at("limits."+key, c.at("limits", l.Pos)) }
	if l.MaxArrayLength < 0 || l.MaxArrayLength > gopcuaMaxArray {
		errs.Add(at("max_array_length"), "limits.max_array_length: must be between 1 and %d, got %d", gopcuaMaxArray, l.MaxArrayLength)
	}
	if m := l.MaxMessageBytes; m != 0 && (m < minMessageBytes || m > maxMessageBytes) {
		errs.Add(at("max_message_bytes"), "limits.max_message_bytes: must be between 64KiB and 64MiB, got %d bytes", m)
	}
	d := l.withDefaults()
	for _, v := range []struct {
		key  string
		size Size
	}{{"max_string_bytes", d.MaxStringBytes}, {"max_bytestring_bytes", d.MaxByteStringBytes}} {
		if v.size > d.MaxMessageBytes {
			errs.Add(at(v.key), "limits.%s: %d bytes cannot arrive in a message of at most %d bytes (limits.max_message_bytes)", v.key, v.size, d.MaxMessageBytes)
		}
	}
}

// hello is the transport limits the collector states in its OPC UA Hello:
// what it accepts from the server.
func (l Limits) hello() *uacp.Acknowledge {
	chunks := (uint32(l.MaxMessageBytes) + chunkBytes - 1) / chunkBytes
	return &uacp.Acknowledge{
		ReceiveBufSize: chunkBytes,
		SendBufSize:    chunkBytes,
		MaxMessageSize: uint32(l.MaxMessageBytes),
		MaxChunkCount:  chunks + 1, // chunk headers and padding take room too
	}
}

// tooLarge returns why v, a decoded variant value, exceeds the limits, or
// "". It looks only at lengths, so it costs nothing on ordinary values.
func (l Limits) tooLarge(v any) string {
	switch x := v.(type) {
	case string:
		return l.text("string", len(x))
	case []byte:
		if int64(len(x)) > int64(l.MaxByteStringBytes) {
			return fmt.Sprintf("ByteString of %d bytes is larger than limits.max_bytestring_bytes (%d)", len(x), l.MaxByteStringBytes)
		}
		return ""
	case ua.XMLElement:
		return l.text("XmlElement", len(x))
	case *ua.XMLElement:
		if x != nil {
			return l.text("XmlElement", len(*x))
		}
		return ""
	case *ua.LocalizedText:
		if x != nil {
			return l.text("LocalizedText", len(x.Text))
		}
		return ""
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Slice {
		if rv.Len() > l.MaxArrayLength {
			return fmt.Sprintf("array of %d elements is larger than limits.max_array_length (%d)", rv.Len(), l.MaxArrayLength)
		}
	}
	return ""
}

func (l Limits) text(kind string, n int) string {
	if int64(n) > int64(l.MaxStringBytes) {
		return fmt.Sprintf("%s of %d bytes is larger than limits.max_string_bytes (%d)", kind, n, l.MaxStringBytes)
	}
	return ""
}
