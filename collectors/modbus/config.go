// Package modbus is the Modbus RTU/TCP collector: its configuration model, value
// decoding and request planning (this file, decode.go, plan.go: pure code, no I/O)
// and the engine that polls devices and publishes readings.
package modbus

import (
	"fmt"
	"math"
	"net"

	"slices"
	"strconv"
	"strings"
	"time"

	"fieldgate/collectors/command"
	"fieldgate/collectors/configfile"
	"fieldgate/collectors/rbe"
	"fieldgate/collectors/reading"
	"fieldgate/devices/profiles"
	"gopkg.in/yaml.v3"
)

// Table is a Modbus data table.
type Table string

// The four Modbus tables.
const (
	TableCoil          Table = "coil"
	TableDiscreteInput Table = "discrete_input"
	TableHolding       Table = "holding_register"
	TableInput         Table = "input_register"
)

var validTables = []Table{TableCoil, TableDiscreteInput, TableHolding, TableInput}

// IsBit reports whether the table holds single bits (coil, discrete_input) rather
// than 16-bit registers.
func (t Table) IsBit() bool { return t == TableCoil || t == TableDiscreteInput }

// Valid reports whether t is one of the four Modbus tables.
func (t Table) Valid() bool {
	for _, v := range validTables {
		if t == v {
			return true
		}
	}
	return false
}

// FunctionCode is the Modbus read function for the table: 1 read coils, 2 read
// discrete inputs, 3 read holding registers, 4 read input registers; 0 for an
// unknown table.
func (t Table) FunctionCode() byte {
	switch t {
	case TableCoil:
		return 1
	case TableDiscreteInput:
		return 2
	case TableHolding:
		return 3
	case TableInput:
		return 4
	}
	return 0
}

// DataType is the type of a tag's value.
type DataType string

// The tag data types.
const (
	TypeBool    DataType = "bool"
	TypeInt16   DataType = "int16"
	TypeUint16  DataType = "uint16"
	TypeInt32   DataType = "int32"
	TypeUint32  DataType = "uint32"
	TypeInt64   DataType = "int64"
	TypeUint64  DataType = "uint64"
	TypeFloat32 DataType = "float32"
	TypeFloat64 DataType = "float64"
	TypeString  DataType = "string"
)

var validTypes = []DataType{TypeBool, TypeInt16, TypeUint16, TypeInt32, TypeUint32,
	TypeInt64, TypeUint64, TypeFloat32, TypeFloat64, TypeString}

// Byte orders of multi-register values, named after how the bytes of a 32-bit
// value whose big-endian bytes are A B C D appear on the wire (register by
// register, each register's high byte first). 64-bit values extend the same
// two rules — bytes swapped within each register, register order reversed — to
// four registers (value bytes A B C D E F G H, A most significant):
//
//	ABCD  ABCD / ABCDEFGH  big-endian registers, big-endian bytes (default)
//	DCBA  DCBA / HGFEDCBA  fully little-endian: registers reversed and bytes swapped
//	BADC  BADC / BADCFEHG  registers in order, bytes swapped within each register
//	CDAB  CDAB / GHEFCDAB  register order reversed, bytes within each kept
//
// On one-register values (int16, uint16, bool with bit) and strings only the
// byte swap is meaningful: ABCD (high byte first) and BADC or DCBA (low byte
// first) are accepted, CDAB is rejected.
const (
	ByteOrderABCD = "ABCD"
	ByteOrderDCBA = "DCBA"
	ByteOrderBADC = "BADC"
	ByteOrderCDAB = "CDAB"
)

var validByteOrders = []string{ByteOrderABCD, ByteOrderDCBA, ByteOrderBADC, ByteOrderCDAB}

// Protocol limits and configuration defaults.
const (
	// MaxRegisters is the most registers one read may return (function 3/4).
	MaxRegisters = 125
	// MaxBits is the most coils or discrete inputs one read may return (function 1/2).
	MaxBits = 2000

	DefaultTimeout        = 500 * time.Millisecond
	DefaultRetries        = 1
	DefaultBaud           = 19200
	DefaultDataBits       = 8
	DefaultParity         = "N"
	DefaultStopBits       = 1
	DefaultBackoffInitial = time.Second
	DefaultBackoffMax     = 60 * time.Second
	// DefaultMaxGap is how many unused registers (or bits) a coalesced request
	// may span between two tags: reading 10 spare registers costs 20 bytes on
	// the wire (~10 ms at 19200 baud), less than a second request's turnaround.
	DefaultMaxGap = 10
	// DefaultUnitID is the unit id of a device that does not set one.
	DefaultUnitID = 1
)

// Config is the collector file (COLLECTOR_CONFIG): the content of the
// gateway.yaml `modbus:` section at top level. ParseConfig fills defaults.
type Config struct {
	// Transport is "rtu" or "tcp" (required).
	Transport string       `yaml:"transport"`
	Serial    SerialConfig `yaml:"serial"`
	TCP       TCPConfig    `yaml:"tcp"`
	// Timeout is the response timeout of one request; default DefaultTimeout (500ms).
	Timeout configfile.Duration `yaml:"timeout"`
	// Retries is the number of extra attempts after a timeout; default 1.
	Retries int `yaml:"retries"`
	// Backoff is the back-off of an unresponsive device (extension to DESIGN.md).
	Backoff BackoffConfig  `yaml:"backoff"`
	Devices []Device       `yaml:"devices"`
	Pos     configfile.Pos `yaml:"-"`
}

// SerialConfig is the RTU line. Defaults: 19200 baud, 8 data bits, parity N, 1 stop bit.
type SerialConfig struct {
	Port     string         `yaml:"port"`
	Baud     int            `yaml:"baud"`
	DataBits int            `yaml:"data_bits"` // 5..8
	Parity   string         `yaml:"parity"`    // N, E or O
	StopBits int            `yaml:"stop_bits"` // 1 or 2
	Pos      configfile.Pos `yaml:"-"`
}

// TCPConfig is the default Modbus TCP peer, "host:port".
type TCPConfig struct {
	Address string         `yaml:"address"`
	Pos     configfile.Pos `yaml:"-"`
}

// BackoffConfig is the exponential back-off of a device that stopped answering:
// it is polled again after Initial, doubling up to Max, so it costs the bus at
// most one timeout per period. Defaults 1s and 60s.
type BackoffConfig struct {
	Initial configfile.Duration `yaml:"initial"`
	Max     configfile.Duration `yaml:"max"`
	Pos     configfile.Pos      `yaml:"-"`
}

// Device is one Modbus slave.
type Device struct {
	// Name is unique in the collector, [A-Za-z0-9_.-]+ (reading.CheckDeviceName): it is a topic level.
	Name string `yaml:"name"`
	// UnitID is the slave address: 1..247 on RTU (unique on the line), 0..247
	// or 255 on TCP (unique per address); default 1.
	UnitID int `yaml:"unit_id"`
	// Address is the device's "host:port" with transport tcp; default the
	// collector's tcp.address. Empty with rtu.
	Address string `yaml:"address"`
	// Profile names a register map from devices/profiles whose tags the device
	// gets; its own Tags override profile tags of the same name and add others.
	Profile string `yaml:"profile"`
	Tags    []Tag  `yaml:"tags"`
	// MaxRegistersPerRequest caps a register read, 1..125, default 125.
	MaxRegistersPerRequest int `yaml:"max_registers_per_request"`
	// MaxBitsPerRequest caps a coil/discrete input read, 1..2000, default 2000.
	MaxBitsPerRequest int `yaml:"max_bits_per_request"`
	// MaxGap is the most unused registers (or bits) a coalesced request may span
	// between two tags; default DefaultMaxGap, 0 reads only adjacent tags together.
	MaxGap int `yaml:"max_gap"`
	// WriteMultiple writes with functions 15 and 16 only, for devices that
	// lack 5 and 6 (default false: 5 for a coil, 6 for one register, 16 for
	// more).
	WriteMultiple bool `yaml:"write_multiple"`
	// Report is the device's report by exception (publish, deadband,
	// heartbeat), the default of its tags.
	Report rbe.Policy     `yaml:",inline"`
	Pos    configfile.Pos `yaml:"-"`
}

// Tag is one value read from a device.
type Tag struct {
	Name string `yaml:"name"`
	// Table is the Modbus table the value lives in.
	Table Table `yaml:"table"`
	// Address is the 0-based protocol address of the first register (or bit).
	Address int      `yaml:"address"`
	Type    DataType `yaml:"type"`
	// ByteOrder is one of ABCD (default), DCBA, BADC, CDAB; see ByteOrderABCD.
	ByteOrder string `yaml:"byte_order"`
	// Scale and Offset give value = raw*scale + offset; with either set an
	// integer value is published as a float64.
	Scale  *float64 `yaml:"scale"`
	Offset float64  `yaml:"offset"`
	// Bit selects one bit (0 = least significant) of a register, with type bool
	// (true/false) or uint16 (0/1) on holding/input registers; required for
	// bool on a register.
	Bit *int `yaml:"bit"`
	// Length is a string's size in registers (two characters each).
	Length int    `yaml:"length"`
	Unit   string `yaml:"unit"`
	// Limits: writable (coil and holding_register tags only), min, max.
	Limits command.Limits `yaml:",inline"`
	// Report is the tag's report by exception; unset keys come from the
	// device.
	Report rbe.Policy     `yaml:",inline"`
	Pos    configfile.Pos `yaml:"-"`
}

// Registers is the tag's size in its table: registers for register tables, 1
// (bit) for coils and discrete inputs. 0 for an unknown type.
func (t *Tag) Registers() int {
	if t.Table.IsBit() {
		return 1
	}
	switch t.Type {
	case TypeBool, TypeInt16, TypeUint16:
		return 1
	case TypeInt32, TypeUint32, TypeFloat32:
		return 2
	case TypeInt64, TypeUint64, TypeFloat64:
		return 4
	case TypeString:
		return t.Length
	}
	return 0
}

// Scaled reports whether the tag's value is transformed by scale/offset (and
// so published as a float64).
func (t *Tag) Scaled() bool { return t.Scale != nil || t.Offset != 0 }

// LoadConfig reads the file at path and parses it with ParseConfig.
func LoadConfig(path string) (*Config, error) {
	data, err := configfile.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read modbus config: %w", err)
	}
	return ParseConfig(path, data)
}

func joinValid[T ~string](vs []T) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = string(v)
	}
	return strings.Join(s, ", ")
}

// Transports.
const (
	TransportRTU = "rtu"
	TransportTCP = "tcp"
)

// DefaultTCPPort is the port added to a tcp address written without one.
const DefaultTCPPort = "502"

// rawConfig mirrors Config as written in the file, with pointers where an
// explicit zero differs from "not set" (retries: 0, max_gap: 0, unit_id: 0).
type rawConfig struct {
	Transport string              `yaml:"transport"`
	Serial    SerialConfig        `yaml:"serial"`
	TCP       TCPConfig           `yaml:"tcp"`
	Timeout   configfile.Duration `yaml:"timeout"`
	Retries   *int                `yaml:"retries"`
	Backoff   BackoffConfig       `yaml:"backoff"`
	Devices   []rawDevice         `yaml:"devices"`
	Pos       configfile.Pos      `yaml:"-"`
}

type rawDevice struct {
	Name                   string         `yaml:"name"`
	UnitID                 *int           `yaml:"unit_id"`
	Address                string         `yaml:"address"`
	Profile                string         `yaml:"profile"`
	Tags                   []Tag          `yaml:"tags"`
	MaxRegistersPerRequest *int           `yaml:"max_registers_per_request"`
	MaxBitsPerRequest      *int           `yaml:"max_bits_per_request"`
	MaxGap                 *int           `yaml:"max_gap"`
	WriteMultiple          bool           `yaml:"write_multiple"`
	Report                 rbe.Policy     `yaml:",inline"`
	Pos                    configfile.Pos `yaml:"-"`
}

// ParseConfig decodes data, the content of the file at path, strictly (unknown
// keys are errors), applies the defaults, expands device profiles and validates
// the result. A file whose only top-level key is `modbus:` is accepted as well.
// Every problem is reported in one *configfile.Errors, one "FILE:LINE: message"
// each, naming the device and tag, at the line of the offending key.
//
// Defaults: timeout 500ms (also for timeout: 0), retries 1, backoff 1s..60s,
// serial 19200 8N1, unit_id 1, max_registers_per_request 125,
// max_bits_per_request 2000, max_gap DefaultMaxGap, byte_order ABCD on
// register tags, type bool on coil and discrete_input tags, port 502 on a tcp
// address without one.
func ParseConfig(path string, data []byte) (*Config, error) {
	doc, err := configfile.Parse(path, data) // size, syntax and alias limits
	if err != nil {
		return nil, err
	}
	var raw rawConfig
	errs := configfile.NewErrors(path)
	loc := locator{lines: map[string]int{}}
	if len(doc.Content) > 0 {
		root := doc.Content[0]
		if root.Kind == yaml.MappingNode && len(root.Content) == 2 && root.Content[0].Value == "modbus" {
			root = root.Content[1]
		}
		errs.Merge(configfile.Pos{}, configfile.DecodeNode(path, root, &raw))
		loc.walk(root, "")
	}
	if raw.Pos.Line == 0 {
		raw.Pos.Line = 1
	}
	loc.root = raw.Pos
	v := validator{errs: errs, loc: loc}
	cfg := v.config(&raw)
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// locator knows the line of every key of the file by its path
// ("serial.baud", "devices[2].tags[0].bit").
type locator struct {
	lines map[string]int
	root  configfile.Pos
}

// walk records key lines; aliases are not followed (their keys live elsewhere).
func (l locator) walk(n *yaml.Node, path string) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := path + "." + n.Content[i].Value
			if path == "" {
				k = n.Content[i].Value
			}
			if _, dup := l.lines[k]; !dup {
				l.lines[k] = n.Content[i].Line
			}
			l.walk(n.Content[i+1], k)
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			k := fmt.Sprintf("%s[%d]", path, i)
			l.lines[k] = item.Line
			l.walk(item, k)
		}
	}
}

// at is the position of the key at path, else fallback, else the file's top.
func (l locator) at(path string, fallback configfile.Pos) configfile.Pos {
	if line, ok := l.lines[path]; ok && path != "" {
		return configfile.Pos{Line: line}
	}
	if fallback.Line == 0 {
		return l.root
	}
	return fallback
}

// validator applies defaults and records every problem.
type validator struct {
	errs *configfile.Errors
	loc  locator
}

func (v *validator) add(path string, fallback configfile.Pos, format string, args ...any) {
	v.errs.Add(v.loc.at(path, fallback), format, args...)
}

func (v *validator) config(raw *rawConfig) *Config {
	cfg := &Config{
		Transport: raw.Transport,
		Serial:    raw.Serial,
		TCP:       raw.TCP,
		Timeout:   raw.Timeout,
		Retries:   DefaultRetries,
		Backoff:   raw.Backoff,
		Pos:       raw.Pos,
	}
	root := raw.Pos
	switch cfg.Transport {
	case TransportRTU, TransportTCP:
	case "":
		v.add("transport", root, "transport is required (valid: rtu, tcp)")
	default:
		v.add("transport", root, "unknown transport %q (valid: rtu, tcp)", cfg.Transport)
	}
	if cfg.Timeout < 0 {
		v.add("timeout", root, "timeout must be positive, got %s", cfg.Timeout)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = configfile.Duration(DefaultTimeout)
	}
	if raw.Retries != nil {
		if *raw.Retries < 0 {
			v.add("retries", root, "retries must be 0 or more, got %d", *raw.Retries)
		} else {
			cfg.Retries = *raw.Retries
		}
	}
	b := &cfg.Backoff
	if b.Initial < 0 {
		v.add("backoff.initial", root, "backoff.initial must be positive, got %s", b.Initial)
	}
	if b.Max < 0 {
		v.add("backoff.max", root, "backoff.max must be positive, got %s", b.Max)
	}
	if b.Initial <= 0 {
		b.Initial = configfile.Duration(DefaultBackoffInitial)
	}
	if b.Max <= 0 {
		b.Max = configfile.Duration(max(DefaultBackoffMax, b.Initial.D()))
	}
	if b.Max < b.Initial {
		v.add("backoff.max", root, "backoff.max %s is less than backoff.initial %s", b.Max, b.Initial)
	}

	if cfg.Transport == TransportRTU {
		v.serial(&cfg.Serial, root)
	}
	if cfg.Transport == TransportTCP && cfg.TCP.Address != "" {
		addr, err := normalizeTCPAddress(cfg.TCP.Address)
		if err != nil {
			v.add("tcp.address", root, "tcp.address: %v", err)
		}
		cfg.TCP.Address = addr
	}

	if len(raw.Devices) == 0 {
		v.add("devices", root, "devices: at least one device is required")
	}
	names := map[string]int{}            // device name -> line
	units := map[string]map[int]string{} // bus -> unit id -> device
	for i := range raw.Devices {
		path := fmt.Sprintf("devices[%d]", i)
		d := v.device(cfg, &raw.Devices[i], path)
		if d.Name != "" {
			if line, dup := names[d.Name]; dup {
				v.add(path+".name", d.Pos, "duplicate device name %q (first at line %d)", d.Name, line)
			} else {
				names[d.Name] = v.loc.at(path+".name", d.Pos).Line
			}
		}
		bus := d.Address // "" for the serial line
		if units[bus] == nil {
			units[bus] = map[int]string{}
		}
		if other, dup := units[bus][d.UnitID]; dup {
			where := "at " + bus
			if cfg.Transport != TransportTCP {
				where = "on the serial line"
			}
			v.add(path+".unit_id", d.Pos, "device %q: unit_id %d already used by device %q %s", d.Name, d.UnitID, other, where)
		} else {
			units[bus][d.UnitID] = d.Name
		}
		cfg.Devices = append(cfg.Devices, d)
	}
	return cfg
}

func (v *validator) serial(s *SerialConfig, root configfile.Pos) {
	if s.Pos.Line > 0 {
		root = s.Pos
	}
	if s.Port == "" {
		v.add("serial", root, "serial.port is required with transport rtu")
	}
	if s.Baud == 0 {
		s.Baud = DefaultBaud
	} else if s.Baud < 50 || s.Baud > 4000000 {
		v.add("serial.baud", root, "serial.baud %d out of range (50..4000000)", s.Baud)
	}
	if s.DataBits == 0 {
		s.DataBits = DefaultDataBits
	} else if s.DataBits < 5 || s.DataBits > 8 {
		v.add("serial.data_bits", root, "serial.data_bits %d out of range (5..8)", s.DataBits)
	}
	switch s.Parity {
	case "":
		s.Parity = DefaultParity
	case "N", "E", "O":
	default:
		v.add("serial.parity", root, "unknown serial.parity %q (valid: N, E, O)", s.Parity)
	}
	if s.StopBits == 0 {
		s.StopBits = DefaultStopBits
	} else if s.StopBits != 1 && s.StopBits != 2 {
		v.add("serial.stop_bits", root, "serial.stop_bits %d out of range (valid: 1, 2)", s.StopBits)
	}
}

// normalizeTCPAddress checks "host:port" and adds port 502 to a bare host.
func normalizeTCPAddress(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		if !strings.Contains(err.Error(), "missing port") {
			return addr, fmt.Errorf("invalid address %q (want host:port)", addr)
		}
		host, port = strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]"), DefaultTCPPort
	}
	if host == "" || strings.ContainsAny(host, "[]/ ") {
		return addr, fmt.Errorf("invalid address %q: no host", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return addr, fmt.Errorf("invalid address %q: bad port %q", addr, port)
	}
	return net.JoinHostPort(host, port), nil
}

func (v *validator) device(cfg *Config, rd *rawDevice, path string) Device {
	d := Device{
		Name:                   rd.Name,
		UnitID:                 DefaultUnitID,
		Address:                rd.Address,
		Profile:                rd.Profile,
		MaxRegistersPerRequest: MaxRegisters,
		MaxBitsPerRequest:      MaxBits,
		MaxGap:                 DefaultMaxGap,
		WriteMultiple:          rd.WriteMultiple,
		Report:                 rd.Report,
		Pos:                    rd.Pos,
	}
	if d.Pos.Line == 0 {
		d.Pos = v.loc.at(path, cfg.Pos)
	}
	who := fmt.Sprintf("device %q", d.Name)
	switch {
	case d.Name == "":
		who = path
		v.add("", d.Pos, "%s: name is required", who)
	case reading.CheckDeviceName(d.Name) != nil:
		v.add(path+".name", d.Pos, "%s: invalid name (use letters, digits, '_', '-', '.')", who)
	}
	if rd.UnitID != nil {
		d.UnitID = *rd.UnitID
		switch {
		case cfg.Transport == TransportRTU && (d.UnitID < 1 || d.UnitID > 247):
			v.add(path+".unit_id", d.Pos, "%s: unit_id %d out of range (1..247 on rtu)", who, d.UnitID)
		case cfg.Transport != TransportRTU && (d.UnitID < 0 || d.UnitID > 247) && d.UnitID != 255:
			v.add(path+".unit_id", d.Pos, "%s: unit_id %d out of range (0..247, or 255, on tcp)", who, d.UnitID)
		}
	}
	switch cfg.Transport {
	case TransportRTU:
		if d.Address != "" {
			v.add(path+".address", d.Pos, "%s: address applies only to transport tcp", who)
		}
	case TransportTCP:
		if d.Address == "" {
			d.Address = cfg.TCP.Address
			if d.Address == "" {
				v.add("", d.Pos, "%s: address is required when tcp.address is not set", who)
			}
		} else {
			addr, err := normalizeTCPAddress(d.Address)
			if err != nil {
				v.add(path+".address", d.Pos, "%s: address: %v", who, err)
			}
			d.Address = addr
		}
	}
	if rd.MaxRegistersPerRequest != nil {
		d.MaxRegistersPerRequest = *rd.MaxRegistersPerRequest
		if d.MaxRegistersPerRequest < 1 || d.MaxRegistersPerRequest > MaxRegisters {
			v.add(path+".max_registers_per_request", d.Pos, "%s: max_registers_per_request %d out of range (1..%d)", who, d.MaxRegistersPerRequest, MaxRegisters)
			d.MaxRegistersPerRequest = MaxRegisters
		}
	}
	if rd.MaxBitsPerRequest != nil {
		d.MaxBitsPerRequest = *rd.MaxBitsPerRequest
		if d.MaxBitsPerRequest < 1 || d.MaxBitsPerRequest > MaxBits {
			v.add(path+".max_bits_per_request", d.Pos, "%s: max_bits_per_request %d out of range (1..%d)", who, d.MaxBitsPerRequest, MaxBits)
			d.MaxBitsPerRequest = MaxBits
		}
	}
	if rd.MaxGap != nil {
		d.MaxGap = *rd.MaxGap
		if d.MaxGap < 0 {
			v.add(path+".max_gap", d.Pos, "%s: max_gap must be 0 or more, got %d", who, d.MaxGap)
		}
	}

	// Tags from the file, then the profile's merged in; paths[k] is the
	// file path of d.Tags[k] ("" for a tag that came from the profile).
	seen := map[string]int{}
	var paths []string
	for j := range rd.Tags {
		t := rd.Tags[j]
		tp := fmt.Sprintf("%s.tags[%d]", path, j)
		if t.Pos.Line == 0 {
			t.Pos = v.loc.at(tp, d.Pos)
		}
		if t.Name != "" {
			if line, dup := seen[t.Name]; dup {
				v.add(tp+".name", t.Pos, "%s: duplicate tag name %q (first at line %d)", who, t.Name, line)
				continue
			}
			seen[t.Name] = v.loc.at(tp+".name", t.Pos).Line
		}
		d.Tags = append(d.Tags, t)
		paths = append(paths, tp)
	}
	profileOK := true
	if d.Profile != "" {
		d.Tags, paths, profileOK = v.expandProfile(&d, paths, path, who)
	}
	for j := range d.Tags {
		v.tag(&d, &d.Tags[j], paths[j], who)
	}
	if len(d.Tags) == 0 && profileOK {
		v.add(path+".tags", d.Pos, "%s: no tags (give tags or a profile)", who)
	}
	for _, p := range d.Report.Problems(nil, nil, true) {
		v.add(path+"."+p.Key, d.Pos, "%s: %s", who, p.Msg)
	}
	return d
}

// tag applies defaults to t and checks it; path is its place in the file
// ("" for a profile tag: problems are then reported at the device).
func (v *validator) tag(d *Device, t *Tag, path string, who string) {
	if t.Name == "" {
		who = fmt.Sprintf("%s: %s", who, path[strings.LastIndex(path, ".")+1:])
		v.add("", t.Pos, "%s: name is required", who)
	} else {
		who = fmt.Sprintf("%s: tag %q", who, t.Name)
		if path == "" {
			who = fmt.Sprintf("%s (from profile %q)", who, d.Profile)
		}
	}
	bad := func(key, format string, args ...any) {
		p := ""
		if path != "" && key != "" {
			p = path + "." + key
		}
		v.add(p, t.Pos, "%s: "+format, append([]any{who}, args...)...)
	}
	if t.Name != "" {
		if err := reading.CheckTagName(t.Name); err != nil {
			bad("name", "%v", err)
		}
	}
	tableOK := t.Table.Valid()
	switch {
	case t.Table == "":
		bad("", "table is required (valid: %s)", joinValid(validTables))
	case !tableOK:
		bad("table", "unknown table %q (valid: %s)", t.Table, joinValid(validTables))
	}
	if t.Type == "" && t.Table.IsBit() {
		t.Type = TypeBool
	}
	typeOK := slices.Contains(validTypes, t.Type)
	switch {
	case t.Type == "":
		bad("", "type is required (valid: %s)", joinValid(validTypes))
	case !typeOK:
		bad("type", "unknown type %q (valid: %s)", t.Type, joinValid(validTypes))
	}
	if t.Table.IsBit() && typeOK && t.Type != TypeBool {
		bad("type", "type %s on table %s: coils and discrete inputs hold single bits (use bool)", t.Type, t.Table)
	}
	oneRegister := t.Type == TypeBool || t.Type == TypeInt16 || t.Type == TypeUint16 || t.Type == TypeString
	if t.ByteOrder != "" {
		switch {
		case !slices.Contains(validByteOrders, t.ByteOrder):
			bad("byte_order", "unknown byte_order %q (valid: %s)", t.ByteOrder, joinValid(validByteOrders))
		case t.Table.IsBit():
			bad("byte_order", "byte_order does not apply to table %s", t.Table)
		case oneRegister && t.ByteOrder == ByteOrderCDAB:
			bad("byte_order", "byte_order CDAB swaps the registers of 32- and 64-bit values; type %s takes ABCD, BADC or DCBA", t.Type)
		}
	} else if !t.Table.IsBit() {
		t.ByteOrder = ByteOrderABCD
	}
	if t.Type == TypeString {
		if t.Length <= 0 {
			bad("length", "type string needs length (registers, 1..%d)", MaxRegisters)
		}
	} else if t.Length != 0 {
		bad("length", "length applies only to type string")
	}
	if t.Bit != nil {
		switch {
		case t.Table.IsBit() || !(t.Type == TypeBool || t.Type == TypeUint16):
			bad("bit", "bit applies only to type bool or uint16 on holding_register or input_register")
		case *t.Bit < 0 || *t.Bit > 15:
			bad("bit", "bit %d out of range (0..15)", *t.Bit)
		}
	} else if t.Type == TypeBool && tableOK && !t.Table.IsBit() {
		bad("", "type bool on %s needs bit (0..15)", t.Table)
	}
	if t.Scale != nil || t.Offset != 0 {
		key := "scale"
		if t.Scale == nil {
			key = "offset"
		}
		if t.Type == TypeBool || t.Type == TypeString {
			bad(key, "scale and offset apply only to numeric types")
		}
		if t.Scale != nil && (*t.Scale == 0 || math.IsNaN(*t.Scale) || math.IsInf(*t.Scale, 0)) {
			bad("scale", "scale %v must be a finite number other than 0", *t.Scale)
		}
		if math.IsNaN(t.Offset) || math.IsInf(t.Offset, 0) {
			bad("offset", "offset %v must be a finite number", t.Offset)
		}
	}
	n := t.Registers()
	if t.Address < 0 || t.Address > 0xFFFF {
		bad("address", "address %d out of range (0..65535)", t.Address)
	} else if n > 0 && t.Address+n-1 > 0xFFFF {
		bad("address", "address %d + %d registers runs past 65535", t.Address, n)
	}
	if tableOK && !t.Table.IsBit() && n > d.MaxRegistersPerRequest {
		bad("", "%d registers exceed max_registers_per_request %d", n, d.MaxRegistersPerRequest)
	}
	if t.Limits.Writable && tableOK && t.Table != TableCoil && t.Table != TableHolding {
		bad("writable", "writable applies only to tables coil and holding_register (%s is read-only)", t.Table)
	}
	if t.Limits.Writable && t.Type == TypeString && t.Length > MaxWriteRegisters {
		bad("writable", "a writable string is at most %d registers long (one write), got length %d", MaxWriteRegisters, t.Length)
	}
	if typeOK {
		for _, p := range t.Limits.Problems(t.ValueType()) {
			bad(p.Key, "%s", p.Msg)
		}
	}
	// The device's policy is checked at the device; a tag for what its own
	// keys bring and for its range.
	for _, p := range t.Report.TagProblems(d.Report, t.Limits.Min, t.Limits.Max, t.ValueType().IsNumeric()) {
		bad(p.Key, "%s", p.Msg)
	}
}

// MaxWriteRegisters is the most registers one write (function 16) carries.
const MaxWriteRegisters = 123

// ValueType is the type of the tag's published value: the tag's type, or
// float64 when scale or offset apply.
func (t *Tag) ValueType() reading.DataType {
	if t.Scaled() {
		return reading.TypeFloat64
	}
	return reading.DataType(t.Type)
}

// Schema describes every device's tags for Sparkplug births and write
// commands.
func (c *Config) Schema() []reading.Device {
	out := make([]reading.Device, 0, len(c.Devices))
	for _, d := range c.Devices {
		rd := reading.Device{Name: d.Name, Tags: make([]reading.Tag, 0, len(d.Tags))}
		for i := range d.Tags {
			t := &d.Tags[i]
			rd.Tags = append(rd.Tags, reading.Tag{Name: t.Name, Unit: t.Unit, Type: t.ValueType(),
				Writable: t.Limits.Writable, Min: t.Limits.Min, Max: t.Limits.Max})
		}
		out = append(out, rd)
	}
	return out
}

// Rules resolves every tag's report by exception (its own keys, then its
// device's): device → tag → rule.
func (c *Config) Rules() map[string]map[string]rbe.Rule {
	out := make(map[string]map[string]rbe.Rule, len(c.Devices))
	for _, d := range c.Devices {
		tags := make(map[string]rbe.Rule, len(d.Tags))
		for i := range d.Tags {
			t := &d.Tags[i]
			tags[t.Name] = t.Report.Merge(d.Report).Rule(t.Limits.Min, t.Limits.Max)
		}
		out[d.Name] = tags
	}
	return out
}

// expandProfile returns the profile's tags, with the device's own tags
// replacing those of the same name (in the profile's order) and the rest
// appended, and their file paths. Profile tags take the device's position.
func (v *validator) expandProfile(d *Device, paths []string, path, who string) ([]Tag, []string, bool) {
	p, err := profiles.Lookup(d.Profile)
	if err != nil {
		v.add(path+".profile", d.Pos, "%s: %v", who, err)
		return d.Tags, paths, false
	}
	own := make(map[string]int, len(d.Tags))
	for i, t := range d.Tags {
		own[t.Name] = i
	}
	used := make([]bool, len(d.Tags))
	tags := make([]Tag, 0, len(p.Tags)+len(d.Tags))
	var tagPaths []string
	for _, pt := range p.Tags {
		if i, ok := own[pt.Name]; ok {
			tags = append(tags, d.Tags[i])
			tagPaths = append(tagPaths, paths[i])
			used[i] = true
			continue
		}
		tags = append(tags, profileTag(&pt, d.Pos))
		tagPaths = append(tagPaths, "")
	}
	for i, t := range d.Tags {
		if !used[i] {
			tags = append(tags, t)
			tagPaths = append(tagPaths, paths[i])
		}
	}
	return tags, tagPaths, true
}

// profileTag is a profile's tag as a collector tag at position pos.
func profileTag(pt *profiles.Tag, pos configfile.Pos) Tag {
	return Tag{
		Name: pt.Name, Table: Table(pt.Table), Address: pt.Address, Type: DataType(pt.Type),
		ByteOrder: pt.ByteOrder, Scale: pt.Scale, Offset: pt.Offset, Bit: pt.Bit,
		Length: pt.Length, Unit: pt.Unit, Pos: pos,
	}
}
