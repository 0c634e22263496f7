// Package profiles holds the register maps of real field devices (meters,
// drives) as embedded YAML files, usable as `profile:` in a Modbus device and
// served by the devsim simulators.
//
// A profile file looks like
//
//	name: eastron-sdm120
//	vendor: Eastron
//	model: SDM120-Modbus
//	kind: energy_meter
//	datasheet: "Eastron SDM120-Modbus ... Modbus Protocol Implementation"
//	revision: "V2.1"
//	tags:
//	  - {name: voltage, table: input_register, address: 0x0000, type: float32, byte_order: ABCD, unit: V,
//	     sim: {kind: sine, min: 228, max: 234, period: 60s}}
//
// Tag fields follow DESIGN.md (tables, types, byte orders, scale, offset, bit,
// length, unit); `sim` says how a simulator varies the value (see Sim).
package profiles

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"
)

//go:embed *.yaml
var files embed.FS

// Profile is the register map of one device model.
type Profile struct {
	// Name is the profile's id as used in `profile:` (e.g. "eastron-sdm630").
	Name   string `yaml:"name"`
	Vendor string `yaml:"vendor"`
	Model  string `yaml:"model"`
	// Kind is what the device is, one of Kinds; empty in a user's own file
	// means unknown. Every embedded profile has one.
	Kind        string `yaml:"kind"`
	Description string `yaml:"description"`
	// Datasheet names the document the map was transcribed from (title,
	// publisher and document number); synthetic profiles say so here.
	Datasheet string `yaml:"datasheet"`
	// Revision is the document's revision, version or date as printed on
	// it ("V1.5", "Rev. A", "04"): register maps change between revisions.
	Revision string `yaml:"revision"`
	Tags     []Tag  `yaml:"tags"`
}

// Kinds are the valid Profile.Kind values.
var Kinds = []string{KindEnergyMeter, KindPowerAnalyser, KindDrive, KindTemperatureController, KindSynthetic}

// Profile kinds.
const (
	KindEnergyMeter           = "energy_meter"
	KindPowerAnalyser         = "power_analyser"
	KindDrive                 = "drive"
	KindTemperatureController = "temperature_controller"
	// KindSynthetic is a map made up for tests, demos and benchmarks.
	KindSynthetic = "synthetic"
)

// Source is the profile's citation on one line: the datasheet, then its
// revision ("…, V1.5").
func (p *Profile) Source() string {
	if p.Revision == "" || p.Datasheet == "" {
		return p.Datasheet + p.Revision
	}
	return p.Datasheet + ", " + p.Revision
}

// Tag is one value of the device. Field meanings are those of a Modbus tag in
// DESIGN.md: Address is the 0-based protocol address; Scale nil means 1;
// Bit nil means the whole register; Length is the register count of a string.
type Tag struct {
	Name      string   `yaml:"name"`
	Table     string   `yaml:"table"`
	Address   int      `yaml:"address"`
	Type      string   `yaml:"type"`
	ByteOrder string   `yaml:"byte_order"`
	Scale     *float64 `yaml:"scale"`
	Offset    float64  `yaml:"offset"`
	Bit       *int     `yaml:"bit"`
	Length    int      `yaml:"length"`
	Unit      string   `yaml:"unit"`
	Sim       *Sim     `yaml:"sim"`
}

// Tables are the Modbus tables, in the order used in error messages.
var Tables = []string{"coil", "discrete_input", "holding_register", "input_register"}

// Types are the value types a tag may have.
var Types = []string{"bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"}

// ByteOrders are the byte orders of multi-register values; "" means ABCD.
var ByteOrders = []string{"ABCD", "DCBA", "BADC", "CDAB"}

// IsBitTable reports whether table holds single bits (coils, discrete inputs).
func IsBitTable(table string) bool { return table == "coil" || table == "discrete_input" }

// Width is the number of addresses the tag occupies in its table: 1 for a
// bool (a coil, a discrete input or one register), otherwise its register
// count (int16 1, 32-bit types 2, 64-bit types 4, string Length).
func (t *Tag) Width() int {
	switch t.Type {
	case "int32", "uint32", "float32":
		return 2
	case "int64", "uint64", "float64":
		return 4
	case "string":
		return t.Length
	default:
		return 1
	}
}

// ScaleOr1 is the tag's scale, 1 when unset.
func (t *Tag) ScaleOr1() float64 {
	if t.Scale == nil {
		return 1
	}
	return *t.Scale
}

// Order is the tag's byte order, "ABCD" when unset.
func (t *Tag) Order() string {
	if t.ByteOrder == "" {
		return "ABCD"
	}
	return t.ByteOrder
}

var (
	loadOnce sync.Once
	loaded   map[string]*Profile
	loadErr  error
)

func load() (map[string]*Profile, error) {
	loadOnce.Do(func() {
		loaded = map[string]*Profile{}
		entries, err := files.ReadDir(".")
		if err != nil {
			loadErr = err
			return
		}
		var errs []error
		for _, e := range entries {
			data, err := files.ReadFile(e.Name())
			if err != nil {
				errs = append(errs, err)
				continue
			}
			p, err := Parse(e.Name(), data)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if want := strings.TrimSuffix(e.Name(), path.Ext(e.Name())); p.Name != want {
				errs = append(errs, fmt.Errorf("%s: profile name %q differs from its file name %q", e.Name(), p.Name, want))
				continue
			}
			if _, dup := loaded[p.Name]; dup {
				errs = append(errs, fmt.Errorf("%s: duplicate profile name %q", e.Name(), p.Name))
				continue
			}
			loaded[p.Name] = p
		}
		loadErr = errors.Join(errs...)
	})
	return loaded, loadErr
}

// Names lists the embedded profiles, sorted.
func Names() []string {
	m, _ := load()
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Lookup returns a copy of the embedded profile called name (the caller may
// modify it); an unknown name is an error listing the valid names.
func Lookup(name string) (*Profile, error) {
	m, err := load()
	if err != nil {
		return nil, fmt.Errorf("embedded profiles: %w", err)
	}
	p, ok := m[name]
	if !ok {
		return nil, fmt.Errorf("unknown profile %q (valid: %s)", name, strings.Join(Names(), ", "))
	}
	return p.clone(), nil
}

func (p *Profile) clone() *Profile {
	c := *p
	c.Tags = slices.Clone(p.Tags)
	for i := range c.Tags {
		t := &c.Tags[i]
		if t.Scale != nil {
			s := *t.Scale
			t.Scale = &s
		}
		if t.Bit != nil {
			b := *t.Bit
			t.Bit = &b
		}
		if t.Sim != nil {
			s := *t.Sim
			t.Sim = &s
		}
	}
	return &c
}

// Parse decodes and validates one profile file strictly: unknown keys, type
// errors and invalid tags are errors naming file and line where known.
// file is used in messages only.
func Parse(file string, data []byte) (*Profile, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var p Profile
	if err := dec.Decode(&p); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty profile", file)
		}
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	// Line numbers for validation messages come from a second, untyped pass.
	var root yaml.Node
	_ = yaml.Unmarshal(data, &root)
	lines := tagLines(&root)
	if err := p.validate(); err != nil {
		var ve *validationError
		if errors.As(err, &ve) && ve.tag >= 0 && ve.tag < len(lines) {
			return nil, fmt.Errorf("%s:%d: %s", file, lines[ve.tag], ve.msg)
		}
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return &p, nil
}

// tagLines returns the line of each entry of the top-level `tags` sequence.
func tagLines(root *yaml.Node) []int {
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 {
		return nil
	}
	m := root.Content[0]
	if m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == "tags" && m.Content[i+1].Kind == yaml.SequenceNode {
			var lines []int
			for _, n := range m.Content[i+1].Content {
				lines = append(lines, n.Line)
			}
			return lines
		}
	}
	return nil
}

type validationError struct {
	tag int // index in Tags, -1 for the profile itself
	msg string
}

func (e *validationError) Error() string { return e.msg }

// Validate checks the profile: a name, a kind from Kinds when set, unique tag
// names, known tables, types and byte orders, addresses within 0..65535
// including the tag's width,
// strings with a length, bits 0..15 on bool register tags only, no two tags
// sharing an address (bit tags may share a register with each other and with
// one int16/uint16 tag, the "status word" pattern), and valid sim settings.
func (p *Profile) Validate() error { return p.validate() }

func (p *Profile) validate() error {
	if p.Name == "" {
		return &validationError{-1, "profile has no name"}
	}
	if len(p.Tags) == 0 {
		return &validationError{-1, fmt.Sprintf("profile %q has no tags", p.Name)}
	}
	if p.Kind != "" && !slices.Contains(Kinds, p.Kind) {
		return &validationError{-1, fmt.Sprintf("profile %q: unknown kind %q (valid: %s)", p.Name, p.Kind, strings.Join(Kinds, ", "))}
	}
	seen := map[string]bool{}
	type key struct {
		table string
		addr  int
	}
	words := map[key]int{} // register or bit address -> tag index of a non-bit tag
	bits := map[key]uint16{}
	bitOwner := map[key]int{}
	for i := range p.Tags {
		t := &p.Tags[i]
		fail := func(format string, args ...any) error {
			return &validationError{i, fmt.Sprintf("tag %q: ", t.Name) + fmt.Sprintf(format, args...)}
		}
		if t.Name == "" {
			return &validationError{i, "tag without name"}
		}
		if seen[t.Name] {
			return fail("duplicate tag name")
		}
		seen[t.Name] = true
		if !slices.Contains(Tables, t.Table) {
			return fail("unknown table %q (valid: %s)", t.Table, strings.Join(Tables, ", "))
		}
		if !slices.Contains(Types, t.Type) {
			return fail("unknown type %q (valid: %s)", t.Type, strings.Join(Types, ", "))
		}
		if t.ByteOrder != "" && !slices.Contains(ByteOrders, t.ByteOrder) {
			return fail("unknown byte_order %q (valid: %s)", t.ByteOrder, strings.Join(ByteOrders, ", "))
		}
		if IsBitTable(t.Table) && t.Type != "bool" {
			return fail("type %q in table %q (a %s holds only type bool)", t.Type, t.Table, t.Table)
		}
		if t.Type == "string" && t.Length <= 0 {
			return fail("type string needs length (registers) > 0")
		}
		if t.Type != "string" && t.Length != 0 {
			return fail("length is only for type string")
		}
		if (t.Type == "string" || t.Type == "bool") && t.ByteOrder != "" && t.ByteOrder != "ABCD" {
			return fail("byte_order %q does not apply to type %q", t.ByteOrder, t.Type)
		}
		if (t.Type == "string" || t.Type == "bool") && (t.Scale != nil || t.Offset != 0) {
			return fail("scale/offset do not apply to type %q", t.Type)
		}
		if t.Scale != nil && *t.Scale == 0 {
			return fail("scale 0")
		}
		if t.Bit == nil && t.Type == "bool" && !IsBitTable(t.Table) {
			// The collector rejects it too: which bit a register bool means is
			// the datasheet's to say, not ours to guess.
			return fail("type bool on %s needs bit (0..15)", t.Table)
		}
		if t.Bit != nil {
			if t.Type != "bool" || IsBitTable(t.Table) {
				return fail("bit is only for type bool in holding_register or input_register")
			}
			if *t.Bit < 0 || *t.Bit > 15 {
				return fail("bit %d out of range 0..15", *t.Bit)
			}
		}
		if t.Address < 0 || t.Address > 65535 {
			return fail("address %d out of range 0..65535", t.Address)
		}
		if end := t.Address + t.Width(); end > 65536 {
			return fail("address %d + %d registers runs past 65535", t.Address, t.Width())
		}
		if err := t.validateSim(); err != nil {
			return fail("sim: %v", err)
		}
		if t.Bit != nil {
			k := key{t.Table, t.Address}
			if bits[k]&(1<<*t.Bit) != 0 {
				return fail("bit %d of %s %d already used by tag %q", *t.Bit, t.Table, t.Address, p.Tags[bitOwner[k]].Name)
			}
			bits[k] |= 1 << *t.Bit
			bitOwner[k] = i
			continue
		}
		for a := t.Address; a < t.Address+t.Width(); a++ {
			k := key{t.Table, a}
			if j, ok := words[k]; ok {
				return fail("%s %d already used by tag %q", t.Table, a, p.Tags[j].Name)
			}
			words[k] = i
		}
	}
	// Bit tags may only overlay a 16-bit word tag (or nothing).
	for k, i := range bitOwner {
		if j, ok := words[k]; ok {
			if w := p.Tags[j].Type; w != "uint16" && w != "int16" {
				return &validationError{i, fmt.Sprintf("tag %q: bit of %s %d overlaps %s tag %q (only int16/uint16 words may carry bit tags)",
					p.Tags[i].Name, k.table, k.addr, w, p.Tags[j].Name)}
			}
		}
	}
	return nil
}

// Duration is a Go duration written as a YAML string ("500ms", "60s").
type Duration time.Duration

// UnmarshalYAML parses a duration string, naming the bad value on error.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: duration must be a string like \"60s\"", n.Line)
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: invalid duration %q (e.g. \"500ms\", \"60s\")", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Load returns the profile arg names: an embedded profile's name, or the path
// of a profile YAML file when arg contains a '/' or ends in .yaml or .yml
// (parsed and validated like the embedded ones).
func Load(arg string) (*Profile, error) {
	if strings.ContainsRune(arg, '/') || strings.HasSuffix(arg, ".yaml") || strings.HasSuffix(arg, ".yml") {
		data, err := os.ReadFile(arg)
		if err != nil {
			return nil, fmt.Errorf("profile file: %w", err)
		}
		return Parse(arg, data)
	}
	return Lookup(arg)
}
