package reading

// DataType is the type of a tag's value as its device or server defines it.
// Consumers that must know a tag before its first value — Sparkplug births,
// write commands — read it from the collector's schema. The names are those
// of the Modbus tag types, plus the OPC UA types Modbus does not have.
type DataType string

// The data types. TypeUnknown is a tag whose type is not known yet (an OPC UA
// node before its server told it); consumers then go by the value.
const (
	TypeUnknown  DataType = ""
	TypeBool     DataType = "bool"
	TypeInt8     DataType = "int8"
	TypeInt16    DataType = "int16"
	TypeInt32    DataType = "int32"
	TypeInt64    DataType = "int64"
	TypeUint8    DataType = "uint8"
	TypeUint16   DataType = "uint16"
	TypeUint32   DataType = "uint32"
	TypeUint64   DataType = "uint64"
	TypeFloat32  DataType = "float32"
	TypeFloat64  DataType = "float64"
	TypeString   DataType = "string"
	TypeDateTime DataType = "datetime" // published as an RFC 3339 string
	TypeBytes    DataType = "bytes"    // published as base64
)

// IsInteger reports whether t is a signed or unsigned integer type.
func (t DataType) IsInteger() bool {
	switch t {
	case TypeInt8, TypeInt16, TypeInt32, TypeInt64, TypeUint8, TypeUint16, TypeUint32, TypeUint64:
		return true
	}
	return false
}

// IsNumeric reports whether t is an integer or floating-point type.
func (t DataType) IsNumeric() bool { return t.IsInteger() || t == TypeFloat32 || t == TypeFloat64 }

// Tag describes one tag of a device: what a consumer needs to know of it
// before (or besides) its values.
type Tag struct {
	Name string
	Unit string
	// Type is the type of the published value (a scaled Modbus integer is a
	// float64), TypeUnknown when the server has not said yet.
	Type DataType
	// Writable tags accept write commands; Min and Max (optional) bound the
	// values written.
	Writable bool
	Min, Max *float64
}

// Device is one device's tags, in configuration order.
type Device struct {
	Name string
	Tags []Tag
}

// AsFloat converts any Go number a reading or a command may carry (the
// int, uint and float kinds) to float64; false for anything else.
func AsFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case float32:
		return float64(x), true
	case int64:
		return float64(x), true
	case uint64:
		return float64(x), true
	case int:
		return float64(x), true
	case int32:
		return float64(x), true
	case int16:
		return float64(x), true
	case int8:
		return float64(x), true
	case uint32:
		return float64(x), true
	case uint16:
		return float64(x), true
	case uint8:
		return float64(x), true
	}
	return 0, false
}
