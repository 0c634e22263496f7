package configfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// laughs is a "billion laughs" document of depth levels, ten aliases each.
func laughs(levels int) string {
	var b strings.Builder
	b.WriteString("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n")
	for i := 1; i < levels; i++ {
		fmt.Fprintf(&b, "a%d: &a%d [%s]\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*a%d, ", i-1), 10), ", "))
	}
	return b.String()
}

// quadratic repeats one anchored list of n tags for n devices: each alias
// is cheap, all of them together are n² values.
func quadratic(n int) string {
	var b strings.Builder
	b.WriteString("tags: &t\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  - {name: t%d, table: holding_register, address: %d, type: uint16}\n", i, i)
	}
	b.WriteString("devices:\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  - {name: d%d, tags: *t}\n", i)
	}
	return b.String()
}

func TestLimits(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       string // "" when accepted
	}{
		{name: "aliases within the limit", yaml: laughs(4)},
		{name: "billion laughs", yaml: laughs(9), want: "f.yml:5: aliases expand this document by more than 100000 values (at *a3)"},
		{name: "long list repeated", yaml: quadratic(150), want: "aliases expand this document by more than 100000 values (at *t)"},
		{name: "list repeated within the limit", yaml: quadratic(60)},
		{name: "too large", yaml: "a: " + strings.Repeat("x", MaxFileBytes), want: "f.yml: file is larger than 8 MiB, the limit of a config file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("f.yml", []byte(tt.yaml))
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				return
			}
			var v struct{}
			decErr := Decode("f.yml", []byte(tt.yaml), &v)
			for _, e := range []error{err, decErr} {
				var errs *Errors
				if !errors.As(e, &errs) || len(errs.List) != 1 || !strings.Contains(e.Error(), tt.want) {
					t.Errorf("error %v, want one *Errors containing %q", e, tt.want)
				}
			}
		})
	}
}

func TestReadFileLimit(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.yml")
	if err := os.WriteFile(big, make([]byte, MaxFileBytes+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile(big); err == nil || !strings.Contains(err.Error(), big+": file is larger than 8 MiB") {
		t.Errorf("ReadFile(%d bytes) = %v, want the size limit named with the file", MaxFileBytes+1, err)
	}
	ok := filepath.Join(dir, "ok.yml")
	if err := os.WriteFile(ok, []byte("a: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadFile(ok); err != nil || string(b) != "a: 1\n" {
		t.Errorf("ReadFile = %q, %v", b, err)
	}
}

// BenchmarkAliasBomb measures how fast a quadratic alias document (16 KB,
// 150 × 150 tags) is refused.
func BenchmarkAliasBomb(b *testing.B) {
	data := []byte(quadratic(150))
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		var v struct{}
		if Decode("f.yml", data, &v) == nil {
			b.Fatal("accepted")
		}
	}
}

// FuzzAliases checks the alias limit against a naive count: a document Parse
// accepts expands by at most MaxAliasNodes nodes, and one it refuses for its
// aliases expands by more. The naive walk stops once past the limit, so a
// bomb cannot stall the fuzzer.
func FuzzAliases(f *testing.F) {
	f.Add([]byte(laughs(9)))
	f.Add([]byte(laughs(5)))
	f.Add([]byte(quadratic(150)))
	f.Add([]byte(quadratic(20)))
	f.Add([]byte("a: &a {b: &b [1, 2, *x]}\nc: [*a, *b, *a]\n"))
	f.Add([]byte("- &a [x, x]\n- &b [*a, *a, *a]\n- [*b, *b, *b, *b]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, err := Parse("f.yml", data)
		var errs *Errors
		if err != nil && !errors.As(err, &errs) {
			t.Fatalf("Parse error %T %v, want *Errors", err, err)
		}
		aliasErr := err != nil && strings.Contains(err.Error(), "aliases expand")
		if err != nil && !aliasErr {
			return // size or syntax
		}
		if doc == nil {
			var n yaml.Node
			if yaml.Unmarshal(data, &n) != nil {
				t.Fatalf("refused for aliases, but yaml.v3 cannot parse it: %v", err)
			}
			doc = &n
		}
		added := 0
		var walk func(n *yaml.Node, viaAlias bool) bool
		walk = func(n *yaml.Node, viaAlias bool) bool {
			if n == nil {
				return true
			}
			if n.Kind == yaml.AliasNode {
				return walk(n.Alias, true)
			}
			if viaAlias {
				added++
				if added > MaxAliasNodes {
					return false
				}
			}
			for _, c := range n.Content {
				if !walk(c, viaAlias) {
					return false
				}
			}
			return true
		}
		within := walk(doc, false)
		switch {
		case aliasErr && within:
			t.Fatalf("refused, but aliases add only %d nodes: %v", added, err)
		case !aliasErr && !within:
			t.Fatalf("accepted, but aliases add more than %d nodes", MaxAliasNodes)
		}
	})
}
