// Package configfile decodes fieldgate's YAML files strictly and reports every
// problem at once as "FILE:LINE: message", the way an engineer fixing a file on
// a gateway wants to see them: all of them, each pointing at its line.
//
// It walks the YAML node tree alongside the Go value instead of relying on
// yaml.v3's KnownFields, because yaml.v3 stops at the first error and does not
// carry strictness into custom unmarshalers. Struct fields are matched by their
// `yaml` tag (or the lower-cased field name); `yaml:",inline"` structs are
// flattened; a field of type Pos receives the position of its mapping.
package configfile

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Pos is a position in a config file. A struct field of type Pos (tag
// `yaml:"-"`) is filled by Decode with the position of the struct's mapping.
type Pos struct {
	Line, Column int
}

// Error is one problem found in a file.
type Error struct {
	File string
	Line int
	Msg  string
}

// Error formats the problem as "FILE:LINE: message" ("FILE: message" when the
// line is unknown).
func (e Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// Errors collects every problem of one file. The zero value is not usable:
// create it with NewErrors or as &Errors{File: path}.
type Errors struct {
	File string
	List []Error
}

// NewErrors returns an empty collection for the file at path.
func NewErrors(path string) *Errors { return &Errors{File: path} }

// Add records a problem at pos.
func (e *Errors) Add(pos Pos, format string, args ...any) {
	e.List = append(e.List, Error{File: e.File, Line: pos.Line, Msg: fmt.Sprintf(format, args...)})
}

// Merge appends the problems of another error: a *Errors keeps its lines,
// anything else is recorded at pos.
func (e *Errors) Merge(pos Pos, err error) {
	if err == nil {
		return
	}
	var other *Errors
	if errors.As(err, &other) {
		e.List = append(e.List, other.List...)
		return
	}
	e.Add(pos, "%v", err)
}

// Len is the number of problems recorded.
func (e *Errors) Len() int { return len(e.List) }

// Err returns nil when no problem was recorded, else e with its problems in
// line order.
func (e *Errors) Err() error {
	if len(e.List) == 0 {
		return nil
	}
	sort.SliceStable(e.List, func(i, j int) bool { return e.List[i].Line < e.List[j].Line })
	return e
}

// Error joins the problems, one "FILE:LINE: message" per line.
func (e *Errors) Error() string {
	lines := make([]string, len(e.List))
	for i, p := range e.List {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// Lines returns the problems as "FILE:LINE: message" strings.
func (e *Errors) Lines() []string {
	lines := make([]string, len(e.List))
	for i, p := range e.List {
		lines[i] = p.Error()
	}
	return lines
}

// Duration is a time.Duration written in YAML as a Go duration string
// ("500ms", "5s", "1m30s"). A bare 0 is accepted; other numbers are rejected
// because their unit would be a guess.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats the duration as Go does.
func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML parses a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a duration such as 500ms or 5s, got a %s", kindName(n))
	}
	if n.Value == "0" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("invalid duration %q (want e.g. 500ms, 5s, 1m)", n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Option changes how Decode reads a file.
type Option func(*options)

type options struct {
	unwrap string
}

// Unwrap accepts a file whose only top-level key is key and decodes that key's
// content instead, so a snippet copied out of gateway.yaml (`modbus: {...}`)
// works as it is.
func Unwrap(key string) Option { return func(o *options) { o.unwrap = key } }

// Decode parses data, the content of the file at path, into v (a pointer) and
// returns every problem as *Errors: the limits (MaxFileBytes, MaxAliasNodes),
// YAML syntax, unknown or duplicate keys, values of the wrong type. An empty
// file decodes to v's zero value.
func Decode(path string, data []byte, v any, opts ...Option) error {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	errs := NewErrors(path)
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("configfile: decode into non-pointer %T", v)
	}
	doc, err := Parse(path, data)
	if err != nil {
		return err
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil
	}
	root := doc.Content[0]
	if o.unwrap != "" && root.Kind == yaml.MappingNode && len(root.Content) == 2 && root.Content[0].Value == o.unwrap {
		root = root.Content[1]
	}
	d := decoder{errs: errs}
	d.value(root, rv.Elem(), "")
	return errs.Err()
}

// DecodeNode decodes an already parsed node, for callers that hold a section
// of a larger file (the gateway hands each collector its protocol section).
// Lines stay those of the original file. A node that did not come from Parse
// is checked for alias expansion (MaxAliasNodes) first.
func DecodeNode(path string, n *yaml.Node, v any) error {
	errs := NewErrors(path)
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("configfile: decode into non-pointer %T", v)
	}
	if err := CheckAliases(path, n); err != nil {
		return err
	}
	d := decoder{errs: errs}
	d.value(n, rv.Elem(), "")
	return errs.Err()
}

// syntaxError turns yaml.v3's "yaml: line N: msg" into a positioned Error.
func syntaxError(path string, err error) Error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, tail, ok := strings.Cut(rest, ":"); ok {
			if n, convErr := strconv.Atoi(num); convErr == nil {
				line, msg = n, strings.TrimSpace(tail)
			}
		}
	}
	return Error{File: path, Line: line, Msg: "invalid YAML: " + msg}
}

type decoder struct {
	errs *Errors
}

var (
	posType         = reflect.TypeOf(Pos{})
	unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()
)

func (d *decoder) add(n *yaml.Node, format string, args ...any) {
	d.errs.Add(Pos{Line: n.Line, Column: n.Column}, format, args...)
}

// where prefixes a message with the key path, so "baud: ..." says which value.
func where(path string) string {
	if path == "" {
		return ""
	}
	return path + ": "
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "null"
		}
		return fmt.Sprintf("value %q", n.Value)
	}
	return "node"
}

func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	if v.CanAddr() && v.Addr().Type().Implements(unmarshalerType) {
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return
		}
		if err := v.Addr().Interface().(yaml.Unmarshaler).UnmarshalYAML(n); err != nil {
			d.add(n, "%s%v", where(path), err)
		}
		return
	}
	isNull := n.Kind == yaml.ScalarNode && n.Tag == "!!null"
	switch v.Kind() {
	case reflect.Pointer:
		if isNull {
			v.SetZero()
			return
		}
		p := reflect.New(v.Type().Elem())
		d.value(n, p.Elem(), path)
		v.Set(p)
	case reflect.Struct:
		if isNull {
			return
		}
		d.structure(n, v, path)
	case reflect.Slice:
		if isNull {
			return
		}
		if n.Kind != yaml.SequenceNode {
			d.add(n, "%swant a list, got a %s", where(path), kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.value(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.Map:
		if isNull {
			return
		}
		if n.Kind != yaml.MappingNode {
			d.add(n, "%swant a mapping, got a %s", where(path), kindName(n))
			return
		}
		if v.Type().Key().Kind() != reflect.String {
			d.add(n, "%sunsupported map key type %s", where(path), v.Type().Key())
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if seen[k.Value] {
				d.add(k, "%sduplicate key %q", where(path), k.Value)
				continue
			}
			seen[k.Value] = true
			e := reflect.New(v.Type().Elem()).Elem()
			d.value(val, e, join(path, k.Value))
			m.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), e)
		}
		v.Set(m)
	default:
		d.scalar(n, v, path)
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (d *decoder) scalar(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.add(n, "%swant a single value, got a %s", where(path), kindName(n))
		return
	}
	if n.Tag == "!!null" {
		v.SetZero()
		return
	}
	if err := n.Decode(v.Addr().Interface()); err != nil {
		d.add(n, "%scannot use %q as %s", where(path), n.Value, typeName(v.Type()))
	}
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	}
	return t.String()
}

// fieldInfo maps a YAML key to a struct field index path.
type fieldInfo struct {
	index []int
}

func structFields(t reflect.Type) (fields map[string]fieldInfo, names []string, posIndex [][]int) {
	fields = map[string]fieldInfo{}
	var walk func(t reflect.Type, prefix []int)
	walk = func(t reflect.Type, prefix []int) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			idx := append(append([]int(nil), prefix...), i)
			if f.Type == posType {
				posIndex = append(posIndex, idx)
				continue
			}
			tag := f.Tag.Get("yaml")
			name, flags, _ := strings.Cut(tag, ",")
			if strings.Contains(flags, "inline") && f.Type.Kind() == reflect.Struct {
				walk(f.Type, idx)
				continue
			}
			if !f.IsExported() || name == "-" {
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			fields[name] = fieldInfo{index: idx}
			names = append(names, name)
		}
	}
	walk(t, nil)
	sort.Strings(names)
	return fields, names, posIndex
}

func (d *decoder) structure(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.add(n, "%swant a mapping, got a %s", where(path), kindName(n))
		return
	}
	fields, names, posIndex := structFields(v.Type())
	for _, idx := range posIndex {
		v.FieldByIndex(idx).Set(reflect.ValueOf(Pos{Line: n.Line, Column: n.Column}))
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
			d.add(k, "%smerge keys (<<) are not supported", where(path))
			continue
		}
		f, ok := fields[k.Value]
		if !ok {
			d.add(k, "%sunknown key %q (valid: %s)", where(path), k.Value, strings.Join(names, ", "))
			continue
		}
		if seen[k.Value] {
			d.add(k, "%sduplicate key %q", where(path), k.Value)
			continue
		}
		seen[k.Value] = true
		d.value(val, v.FieldByIndex(f.index), join(path, k.Value))
	}
}
