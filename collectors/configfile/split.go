package configfile

import (
	"bytes"
	"errors"
	"fmt"

	"gopkg.in/yaml.v3"
)

// Splitting a large file. A node tree of yaml.v3 costs about 1.5 kB per
// value written as {name: r001, table: holding_register, address: 1, type:
// uint16}: the 8 MB collector file of 1,000 PLCs × 100 registers is half a
// gigabyte as a tree. SplitList cuts such a file, as text, into the items of
// one block list and the rest, so that each item can be parsed and decoded
// on its own and the tree of one item is all there ever is.
//
// Aliases are declined too: MaxAliasNodes bounds what they add to a whole
// document, which only the whole parse can count.
//
// The cut only relies on indentation: an item is a line at the list's
// indentation starting with "- ", up to the next one. Where the text does
// not have that plain shape (a flow list, the key written twice, an inline
// value, a line after the list indented between key and items, line breaks
// other than "\n" and "\r\n", a tab in indentation) SplitList declines, and
// the callers parse the whole file as before.
// Anything the cut could get wrong — a quoted string or a flow collection
// spanning items, an alias to an anchor in another item — leaves a piece
// that does not parse on its own: callers take any error as a reason to
// parse the whole file again, which also words every problem exactly as
// the whole-file parse does.

// Item is one item of a list cut out of a file by SplitList.
type Item struct {
	// Text is the item's lines, as in the file (a sub-slice of it).
	Text []byte
	// Line is the file line of Text's first line (1-based).
	Line int
}

// SplitList finds the block list that is the value of key at the top level
// of data (inside the only top-level key unwrap, when that is how the file
// is written) and returns the document with the list's lines blanked — so
// every other line keeps its number — and the list's items. ok is false
// when the file is not written in the plain block shape SplitList can cut.
func SplitList(data []byte, key, unwrap string) (rest []byte, items []Item, ok bool) {
	if hasOtherBreaks(data) || hasTabIndent(data) {
		return nil, nil, false
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	// The top-level mapping starts where the first line does: column 0
	// in a file, further right in a section cut out of a larger file
	// with its indentation kept (the gateway's protocol sections).
	top := nextContent(lines, 0)
	if top < 0 {
		return nil, nil, false
	}
	root := indent(lines[top])
	level, keyAt := root, -1
	if unwrap != "" {
		if u, _ := findKey(lines, 0, root, unwrap); u >= 0 {
			if first := nextContent(lines, u+1); first >= 0 && indent(lines[first]) > root {
				level = indent(lines[first])
				keyAt, _ = findKey(lines, u+1, level, key)
			}
		}
	}
	if keyAt < 0 {
		if level != root {
			return nil, nil, false
		}
		keyAt, _ = findKey(lines, 0, root, key)
	}
	if keyAt < 0 {
		return nil, nil, false
	}
	first := nextContent(lines, keyAt+1)
	if first < 0 || !isItem(lines[first]) || indent(lines[first]) < level {
		return nil, nil, false
	}
	seq := indent(lines[first])
	end := first
	for i := first; i < len(lines); i++ {
		l := lines[i]
		if blankOrComment(l) {
			continue
		}
		ind := indent(l)
		if ind < seq && isItem(l) {
			return nil, nil, false // items at two indentations: not a plain list
		}
		if ind < seq || ind == seq && !isItem(l) {
			if ind > level {
				// Neither the list's nor a sibling key's: the whole
				// parse refuses it, while in the rest it would be
				// taken for the key's own value (an anchor, say).
				return nil, nil, false
			}
			break
		}
		if ind == seq {
			items = append(items, Item{Line: i + 1})
		}
		end = i + 1
	}
	// The lines are consecutive sub-slices of data: an item's text is the
	// span from its first line to the next item (or the list's end).
	offset := make([]int, len(lines)+1)
	for i, l := range lines {
		offset[i+1] = offset[i] + len(l)
	}
	for k := range items {
		to := end
		if k+1 < len(items) {
			to = items[k+1].Line - 1
		}
		items[k].Text = data[offset[items[k].Line-1]:offset[to]:offset[to]]
	}
	rest = make([]byte, 0, len(data)-(offset[end]-offset[first])+end-first)
	rest = append(rest, data[:offset[first]]...)
	for range end - first {
		rest = append(rest, '\n')
	}
	rest = append(rest, data[offset[end]:]...)
	return rest, items, true
}

// findKey returns the index of the line at indentation ind, from line
// from on, that is exactly "key:" (a comment may follow), and the
// indentation of that line; -1 when there is none or more than one, or when
// the key carries a value on its line. Lines less indented than ind end the
// search (they close the mapping the key would belong to).
func findKey(lines [][]byte, from, ind int, key string) (int, int) {
	found := -1
	for i := from; i < len(lines); i++ {
		l := lines[i]
		if blankOrComment(l) {
			continue
		}
		in := indent(l)
		if in < ind {
			break
		}
		if in != ind {
			continue
		}
		body := bytes.TrimRight(l[in:], " \t\r\n")
		name, value, isKey := bytes.Cut(body, []byte(":"))
		if !isKey || string(name) != key {
			continue
		}
		value = bytes.TrimSpace(value)
		if found >= 0 || len(value) > 0 && value[0] != '#' {
			return -1, 0
		}
		found = i
	}
	return found, ind
}

// hasOtherBreaks reports whether data breaks a line other than with "\n" or
// "\r\n": YAML also breaks lines at a lone "\r", NEL (U+0085), LS (U+2028)
// and PS (U+2029), and a cut made at "\n" alone would then disagree with
// the parser about where lines and items start.
func hasOtherBreaks(data []byte) bool {
	if bytes.Count(data, []byte("\r")) != bytes.Count(data, []byte("\r\n")) {
		return true
	}
	return bytes.Contains(data, []byte("\u0085")) || bytes.Contains(data, []byte("\u2028")) || bytes.Contains(data, []byte("\u2029"))
}

// hasTabIndent reports whether a line starts with a tab after its spaces.
// The cut takes such a line for blank, a comment or content by its text,
// while YAML refuses a tab in indentation in some places and not others.
func hasTabIndent(data []byte) bool {
	for l := range bytes.Lines(data) {
		if t := bytes.TrimLeft(l, " "); len(t) > 0 && t[0] == '\t' {
			return true
		}
	}
	return false
}

func nextContent(lines [][]byte, from int) int {
	for i := from; i < len(lines); i++ {
		if !blankOrComment(lines[i]) {
			return i
		}
	}
	return -1
}

// indent counts a line's leading spaces (YAML indents with spaces only).
func indent(l []byte) int {
	n := 0
	for n < len(l) && l[n] == ' ' {
		n++
	}
	return n
}

func blankOrComment(l []byte) bool {
	t := bytes.TrimLeft(l, " \t")
	return len(t) == 0 || t[0] == '\n' || t[0] == '\r' || t[0] == '#'
}

// isItem reports whether the line starts a list item: "- " or a lone "-".
func isItem(l []byte) bool {
	t := l[indent(l):]
	return len(t) > 0 && t[0] == '-' && (len(t) == 1 || t[1] == ' ' || t[1] == '\n' || t[1] == '\r')
}

// errSplit is returned by ParseItems for a piece that is not the list
// items it should be.
var errSplit = errors.New("not the list items expected")

// RunBytes is about how much text Runs puts in one run: parsing it makes a
// node tree of a few MB, and parsing in runs rather than item by item saves
// the parser's setup, which costs more than a small item.
const RunBytes = 64 << 10

// Runs cuts items into runs of consecutive items of about RunBytes of text
// (at least one item each), for ParseItems.
func Runs(items []Item) [][]Item {
	var out [][]Item
	for start := 0; start < len(items); {
		end, size := start, 0
		for end < len(items) && (end == start || size+len(items[end].Text) <= RunBytes) {
			size += len(items[end].Text)
			end++
		}
		out = append(out, items[start:end])
		start = end
	}
	return out
}

// ParseItems parses consecutive items SplitList cut out and returns their
// nodes with the lines of the whole file.
func ParseItems(run []Item) ([]*yaml.Node, error) {
	if len(run) == 0 {
		return nil, nil
	}
	text := run[0].Text
	if len(run) > 1 {
		n := 0
		for _, it := range run {
			n += len(it.Text)
		}
		text = make([]byte, 0, n)
		for _, it := range run {
			text = append(text, it.Text...)
		}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(text, &doc); err != nil {
		return nil, err
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.SequenceNode || len(doc.Content[0].Content) != len(run) {
		return nil, fmt.Errorf("line %d: %w", run[0].Line, errSplit)
	}
	if hasAlias(&doc) {
		// Parse counts what aliases add to the whole document
		// (MaxAliasNodes); item by item, that sum cannot be kept.
		return nil, fmt.Errorf("line %d: %w", run[0].Line, errAlias)
	}
	nodes := doc.Content[0].Content
	for _, n := range nodes {
		shiftLines(n, run[0].Line-1)
	}
	return nodes, nil
}

// errAlias is returned by ParseItems for items with aliases.
var errAlias = errors.New("aliases are decoded with the whole file")

func hasAlias(n *yaml.Node) bool {
	if n.Kind == yaml.AliasNode {
		return true
	}
	for _, c := range n.Content {
		if hasAlias(c) {
			return true
		}
	}
	return false
}

// ParseItem parses one item SplitList cut out (see ParseItems).
func ParseItem(it Item) (*yaml.Node, error) {
	nodes, err := ParseItems([]Item{it})
	if err != nil {
		return nil, err
	}
	return nodes[0], nil
}

// shiftLines moves every node of the tree by lines. An alias points to a
// node of the tree (its anchor comes first), so Content reaches them all.
func shiftLines(n *yaml.Node, by int) {
	n.Line += by
	for _, c := range n.Content {
		shiftLines(c, by)
	}
}
