package configfile

import (
	"fmt"
	"io"
	"os"

	"gopkg.in/yaml.v3"
)

// Limits of every file read through this package: gateway.yaml, collector
// files and device profiles. They bound what a file can cost before any of
// its content is looked at, so a hostile or broken file is rejected in
// milliseconds with its FILE:LINE instead of stalling `fieldgate validate`,
// a reload or a collector's start.
const (
	// MaxFileBytes is the largest file accepted: 8 MiB, about 80,000 OPC UA
	// nodes or Modbus tags written out one per line.
	MaxFileBytes = 8 << 20
	// MaxAliasNodes is how many YAML nodes aliases (*name) may add to a
	// document in all: every alias counts the nodes of what it repeats. It
	// stops "billion laughs" documents, whose few kilobytes expand into
	// millions of values, and the quadratic case of a long anchored list
	// repeated many times. 100,000 nodes are, for instance, one list of 50
	// tags repeated for 200 devices.
	MaxAliasNodes = 100_000
)

// ReadFile reads the file at path, refusing one larger than MaxFileBytes
// without reading it all.
func ReadFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileBytes {
		return nil, Error{File: path, Msg: sizeMessage()}
	}
	return data, nil
}

func sizeMessage() string {
	return fmt.Sprintf("file is larger than %d MiB, the limit of a config file", MaxFileBytes>>20)
}

// Parse parses data, the content of the file at path, into a node tree
// after checking the limits: size (MaxFileBytes) and alias expansion
// (MaxAliasNodes). A problem is returned as *Errors with its line; an
// empty file gives an empty document node.
func Parse(path string, data []byte) (*yaml.Node, error) {
	errs := NewErrors(path)
	if len(data) > MaxFileBytes {
		errs.List = append(errs.List, Error{File: path, Msg: sizeMessage()})
		return nil, errs
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		errs.List = append(errs.List, syntaxError(path, err))
		return nil, errs
	}
	if err := CheckAliases(path, &doc); err != nil {
		return nil, err
	}
	return &doc, nil
}

// CheckAliases reports, as *Errors at the line of the alias that passes the
// limit, a node tree whose aliases add more than MaxAliasNodes nodes.
func CheckAliases(path string, n *yaml.Node) error {
	if at := excessiveAlias(n, MaxAliasNodes); at != nil {
		errs := NewErrors(path)
		errs.Add(Pos{Line: at.Line, Column: at.Column},
			"aliases expand this document by more than %d values (at *%s); write the repeated part out, or use a device profile", MaxAliasNodes, at.Value)
		return errs
	}
	return nil
}

// excessiveAlias walks the document as written (not through aliases) and
// adds up, for every alias, the nodes it stands for once expanded. It
// returns the alias at which the sum passes limit, or nil. Sizes are
// memoised per anchored node and saturate past limit, so a document of
// nested aliases costs one pass over what is written, however far it would
// expand.
func excessiveAlias(root *yaml.Node, limit int) *yaml.Node {
	sizes := map[*yaml.Node]int{}
	var expanded func(n *yaml.Node, depth int) int
	expanded = func(n *yaml.Node, depth int) int {
		if n == nil {
			return 0
		}
		if n.Kind == yaml.AliasNode {
			n = n.Alias
			if n == nil {
				return 1
			}
		}
		if s, ok := sizes[n]; ok {
			return s
		}
		if depth > maxDepth {
			// yaml.v3 refuses deeper documents itself; this is only a
			// guard against a tree built some other way.
			return limit + 1
		}
		sizes[n] = limit + 1 // an alias to an ancestor repeats forever
		total := 1
		for _, c := range n.Content {
			total += expanded(c, depth+1)
			if total > limit {
				total = limit + 1
				break
			}
		}
		sizes[n] = total
		return total
	}
	added := 0
	var walk func(n *yaml.Node) *yaml.Node
	walk = func(n *yaml.Node) *yaml.Node {
		if n == nil {
			return nil
		}
		if n.Kind == yaml.AliasNode {
			added += expanded(n, 0)
			if added > limit {
				return n
			}
			return nil
		}
		for _, c := range n.Content {
			if at := walk(c); at != nil {
				return at
			}
		}
		return nil
	}
	return walk(root)
}

// maxDepth bounds the nesting excessiveAlias follows.
const maxDepth = 10_000
