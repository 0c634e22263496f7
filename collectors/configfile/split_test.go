package configfile

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

func TestSplitList(t *testing.T) {
	tests := []struct {
		name   string
		doc    string
		unwrap string
		items  []int // first lines of the items; nil: declined
	}{
		{"plain", "transport: tcp\ndevices:\n  - name: a\n    tags:\n      - {name: x}\n  - name: b\ntimeout: 1s\n", "", []int{3, 6}},
		{"compact", "devices:\n- name: a\n  tags:\n  - {name: x}\n- name: b\ntimeout: 1s\n", "", []int{2, 5}},
		{"comments and blanks", "devices:\n  # first\n  - name: a\n\n  # second\n  - name: b\n# after\ntimeout: 1s\n", "", []int{3, 6}},
		{"crlf", "devices:\r\n  - name: a\r\n  - name: b\r\n", "", []int{2, 3}},
		{"dash alone", "devices:\n  -\n    name: a\n  - name: b\n", "", []int{2, 4}},
		{"wrapped", "modbus:\n  transport: rtu\n  devices:\n    - name: a\n    - name: b\n", "modbus", []int{4, 5}},
		{"wrapped compact", "modbus:\n  devices:\n  - name: a\n  transport: rtu\n", "modbus", []int{3}},
		{"document end", "devices:\n- name: a\n---\nx: 1\n", "", []int{2}},
		{"indented section", "\n\n      endpoint: x\n      devices:\n        - {a: 1}\n        - {a: 2}\n      auth: {}\n", "opcua", []int{5, 6}},
		{"flow list", "devices: [{name: a}, {name: b}]\n", "", nil},
		{"anchored", "devices: &d\n  - name: a\n", "", nil},
		{"twice", "devices:\n  - name: a\ndevices:\n  - name: b\n", "", nil},
		{"no list", "devices:\n  name: a\n", "", nil},
		{"missing", "transport: tcp\n", "", nil},
		{"nested only", "tcp:\n  devices:\n    - name: a\n", "", nil},
		// YAML breaks lines where a cut at "\n" would not: the parser
		// and the cut would disagree about lines and items (found by
		// FuzzParseConfig).
		{"lone cr", "devices:\n- name: a\r  profile: p\ntcp: {}\n", "", nil},
		{"nel", "devices:\n- name: a\u0085  profile: p\n", "", nil},
		{"line separator", "devices:\n- name: a\u2028  profile: p\n", "", nil},
		{"paragraph separator", "devices:\n- name: a\u2029  profile: p\n", "", nil},
		// A tab where indentation goes is refused by the whole parse in
		// places where the cut would see a comment in the rest.
		{"tab before comment", "devices:\n- name: a\n\t# c\n", "", nil},
		{"tab after spaces", "devices:\n  - name: a\n  \t# c\n", "", nil},
		// A line after the list, more indented than the key and not an
		// item: the whole parse refuses it; in the rest it would be the
		// key's own (anchored, empty) value.
		{"anchor after list", "devices:\n  - name: a\n  &a\n", "", nil},
		{"tag after list", "devices:\n  - name: a\n # c\n !!null\n", "", nil},
		{"wrapped but not asked", "modbus:\n  devices:\n    - name: a\n", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rest, items, ok := SplitList([]byte(tt.doc), "devices", tt.unwrap)
			if ok != (tt.items != nil) {
				t.Fatalf("ok = %v, want %v", ok, tt.items != nil)
			}
			if !ok {
				return
			}
			var lines []int
			var joined []byte
			for _, it := range items {
				lines = append(lines, it.Line)
				joined = append(joined, it.Text...)
			}
			if !equalInts(lines, tt.items) {
				t.Errorf("items at lines %v, want %v", lines, tt.items)
			}
			if strings.Count(string(rest), "\n") != strings.Count(tt.doc, "\n") {
				t.Errorf("rest has %d lines, the document %d", strings.Count(string(rest), "\n"), strings.Count(tt.doc, "\n"))
			}
			// Rest and items together are the document: nothing lost.
			if got, want := len(bytes.TrimRight(rest, "\n"))+len(joined), len(strings.TrimRight(tt.doc, "\n")); got < want-len(items)*2 {
				t.Errorf("rest and items hold %d bytes of %d", got, want)
			}
			for _, it := range items {
				n, err := ParseItem(it)
				if err != nil {
					t.Fatalf("item at line %d: %v", it.Line, err)
				}
				if n.Line != it.Line && n.Line != it.Line+1 {
					t.Errorf("item node at line %d, item starts at %d", n.Line, it.Line)
				}
			}
		})
	}
}

func TestParseItemRejectsPieces(t *testing.T) {
	for _, text := range []string{"  - name: \"a\n", "  - {name: a,\n", "  - a\n  - b\n", "name: a\n", "  - *ref\n"} {
		if _, err := ParseItem(Item{Text: []byte(text), Line: 10}); err == nil {
			t.Errorf("ParseItem(%q) accepted", text)
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// BenchmarkSplitList cuts a file the size of 1,000 PLCs × 100 registers
// (about 8 MB): "cut" is the whole of SplitList, "checks" only its refusal
// of line breaks and tab indentation the cut cannot follow.
func BenchmarkSplitList(b *testing.B) {
	var buf bytes.Buffer
	buf.WriteString("transport: tcp\ndevices:\n")
	for d := range 1000 {
		fmt.Fprintf(&buf, "  - name: plc%04d\n    tags:\n", d)
		for r := range 100 {
			fmt.Fprintf(&buf, "      - {name: r%03d, table: holding_register, address: %d, type: uint16}\n", r, r)
		}
	}
	data := buf.Bytes()
	b.Run("cut", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if _, items, ok := SplitList(data, "devices", ""); !ok || len(items) != 1000 {
				b.Fatalf("ok %v, %d items", ok, len(items))
			}
		}
	})
	b.Run("checks", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if hasOtherBreaks(data) || hasTabIndent(data) {
				b.Fatal("plain file refused")
			}
		}
	})
}
