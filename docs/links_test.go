// Package docs holds fieldgate's user documentation. Its test checks that
// every Markdown file of the repository stands alone: each link leads to a
// file (and heading) inside the repository, and no relative path in the
// text climbs out of it.
package docs

import (
	"bufio"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var (
	// inlineLink matches [text](target) and ![alt](target), with an
	// optional title after the target.
	inlineLink = regexp.MustCompile(`!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)`)
	// refDef matches a reference definition: [id]: target
	refDef = regexp.MustCompile(`^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)`)
	// htmlAttr matches href="…" and src="…" of inline HTML.
	htmlAttr = regexp.MustCompile(`(?:href|src)="([^"]+)"`)
	// upPath matches a relative path that climbs: ../x, ../../x.
	upPath = regexp.MustCompile(`(?:^|[\s(\x60"'])((?:\.\./)+[\w.-][\w./-]*)`)
	// scheme matches a URL with a scheme (https:, mailto:).
	scheme   = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)
	heading  = regexp.MustCompile(`^#{1,6}\s+(.*?)\s*#*\s*$`)
	codeSpan = regexp.MustCompile("`[^`]*`")
)

// problem is one bad link: file:line: message.
type problem struct {
	file string
	line int
	msg  string
}

func (p problem) String() string { return fmt.Sprintf("%s:%d: %s", p.file, p.line, p.msg) }

// repoRoot is the directory holding go.mod, above the test's directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test directory")
		}
		dir = parent
	}
}

// markdownFiles lists the repository's Markdown files, leaving out what is
// not ours (node_modules), build output and test fixtures.
func markdownFiles(t *testing.T, root string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (strings.HasPrefix(name, ".") || name == "node_modules" || name == "testdata" || name == "dist" || name == "bin") {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ".md") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// slug is GitHub's anchor of a heading: lower case, punctuation dropped,
// spaces turned into hyphens.
func slug(h string) string {
	h = strings.ToLower(codeSpan.ReplaceAllStringFunc(h, func(s string) string { return strings.Trim(s, "`") }))
	var b strings.Builder
	for _, r := range h {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r > 127 && r != '—' && r != '–' && r != '·':
			b.WriteRune(r)
		}
	}
	return b.String()
}

// anchors lists the heading anchors of a Markdown file, numbering
// duplicates as GitHub does (x, x-1, x-2).
func anchors(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []string
	seen := map[string]int{}
	inFence := false
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inFence = !inFence
			continue
		}
		if inFence {
			continue
		}
		if m := heading.FindStringSubmatch(line); m != nil {
			s := slug(m[1])
			if n := seen[s]; n > 0 {
				out = append(out, fmt.Sprintf("%s-%d", s, n))
			} else {
				out = append(out, s)
			}
			seen[s]++
		}
	}
	return out, nil
}

// checkFile returns the problems of one Markdown file inside root.
func checkFile(root, path string) ([]problem, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rel, _ := filepath.Rel(root, path)
	var out []problem
	add := func(line int, format string, args ...any) {
		out = append(out, problem{rel, line, fmt.Sprintf(format, args...)})
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	inFence := false
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inFence = !inFence
			continue
		}
		if inFence {
			continue
		}
		// Text and code spans may name paths, but never one outside
		// (links are checked below).
		prose := line
		for _, re := range []*regexp.Regexp{inlineLink, refDef, htmlAttr} {
			prose = re.ReplaceAllString(prose, "")
		}
		for _, m := range upPath.FindAllStringSubmatch(prose, -1) {
			target := filepath.Join(filepath.Dir(path), m[1])
			if !inside(root, target) {
				add(n, "%q points outside the repository", m[1])
			}
		}
		text := codeSpan.ReplaceAllString(line, "")
		var targets []string
		for _, re := range []*regexp.Regexp{inlineLink, refDef, htmlAttr} {
			for _, m := range re.FindAllStringSubmatch(text, -1) {
				targets = append(targets, m[1])
			}
		}
		for _, target := range targets {
			if msg := checkTarget(root, path, target); msg != "" {
				add(n, "link %q: %s", target, msg)
			}
		}
	}
	return out, sc.Err()
}

// checkTarget says what is wrong with a link target of the file at path,
// or "" when it leads to a file (and heading) inside root.
func checkTarget(root, path, target string) string {
	if scheme.MatchString(target) {
		if strings.HasPrefix(target, "file:") {
			return "a file: URL leads outside the repository"
		}
		return "" // a web address
	}
	target, fragment, _ := strings.Cut(target, "#")
	target, _, _ = strings.Cut(target, "?")
	if t, err := url.PathUnescape(target); err == nil {
		target = t
	}
	file := path
	if target != "" {
		if strings.HasPrefix(target, "/") {
			file = filepath.Join(root, target) // GitHub: relative to the repository's root
		} else {
			file = filepath.Join(filepath.Dir(path), target)
		}
		if !inside(root, file) {
			return "points outside the repository"
		}
		if _, err := os.Stat(file); err != nil {
			return "no such file in the repository"
		}
	}
	if fragment != "" && strings.HasSuffix(file, ".md") {
		as, err := anchors(file)
		if err != nil {
			return err.Error()
		}
		if !slices.Contains(as, fragment) {
			return fmt.Sprintf("no heading with anchor #%s in %s", fragment, filepath.Base(file))
		}
	}
	return ""
}

func inside(root, path string) bool {
	rel, err := filepath.Rel(root, filepath.Clean(path))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// TestMarkdownLinks fails when a Markdown file of the repository links to a
// path outside it, to a missing file or to a missing heading.
func TestMarkdownLinks(t *testing.T) {
	root := repoRoot(t)
	files := markdownFiles(t, root)
	if !slices.ContainsFunc(files, func(f string) bool { return strings.HasSuffix(f, "docs/mqtt.md") }) {
		t.Fatalf("docs/mqtt.md not among the Markdown files found: %v", files)
	}
	for _, f := range files {
		ps, err := checkFile(root, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			t.Error(p)
		}
	}
}

// TestCheckerFindsBadLinks runs the checker on a fixture with one link of
// each kind, so TestMarkdownLinks cannot pass by finding nothing.
func TestCheckerFindsBadLinks(t *testing.T) {
	root := repoRoot(t)
	ps, err := checkFile(root, filepath.Join(root, "docs", "testdata", "links.md"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range ps {
		got = append(got, fmt.Sprintf("%d: %s", p.line, p.msg))
	}
	want := []string{
		`7: "../../../shared/DESIGN.md" points outside the repository`,
		`8: link "../../../shared/DESIGN.md": points outside the repository`,
		`9: link "missing.md": no such file in the repository`,
		`10: link "../mqtt.md#no-such-heading": no heading with anchor #no-such-heading in mqtt.md`,
		`11: link "file:///etc/passwd": a file: URL leads outside the repository`,
		`12: link "/docs/nothing-here.md": no such file in the repository`,
		`13: link "#nowhere": no heading with anchor #nowhere in links.md`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestSlug(t *testing.T) {
	for h, want := range map[string]string{
		"fieldgate watch":                       "fieldgate-watch",
		"`gateway.yaml` reference":              "gatewayyaml-reference",
		"Install, run, test":                    "install-run-test",
		"Modbus collector (`modbus-collector`)": "modbus-collector-modbus-collector",
		"gateway.yaml keys":                     "gatewayyaml-keys",
		"Seq: detecting loss":                   "seq-detecting-loss",
	} {
		if got := slug(h); got != want {
			t.Errorf("slug(%q) = %q, want %q", h, got, want)
		}
	}
}
