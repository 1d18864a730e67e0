// Package docs holds no code: its test checks the links of README.md and
// of the pages in this directory, so that a renamed file or heading fails
// `make test` instead of a reader.
package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// link is a markdown inline link's target, with an optional title.
var link = regexp.MustCompile(`\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)

// TestLinksResolve checks every inline link outside code blocks: a
// relative one names a file or directory of the repository (and, with a
// #fragment into a markdown file, one of its headings), and README.md,
// the page every copy of the repository starts from, links only inside
// it.
func TestLinksResolve(t *testing.T) {
	for _, p := range readPages(t) {
		page := p.name
		for _, l := range prose(p.text) {
			n := l.n
			for _, m := range link.FindAllStringSubmatch(l.text, -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					if page == "../README.md" {
						t.Errorf("%s:%d: %s leaves the repository", page, n, target)
					}
					continue
				}
				file, frag, _ := strings.Cut(target, "#")
				path := page
				if file != "" {
					path = filepath.Join(filepath.Dir(page), file)
					if _, err := os.Stat(path); err != nil {
						t.Errorf("%s:%d: %s does not resolve: %v", page, n, target, err)
						continue
					}
				}
				if frag != "" && strings.HasSuffix(path, ".md") && !hasAnchor(t, path, frag) {
					t.Errorf("%s:%d: %s: %s has no heading with the anchor #%s", page, n, target, path, frag)
				}
			}
		}
	}
}

// page is README.md or a page of this directory, and its text.
type page struct {
	name, text string
}

// readPages reads README.md and every page of this directory.
func readPages(t *testing.T) []page {
	t.Helper()
	names, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	var pages []page
	for _, name := range append(names, "../README.md") {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, page{name, string(b)})
	}
	return pages
}

// line is a line of a page and its number, from 1.
type line struct {
	n    int
	text string
}

// prose returns the lines of a markdown text without those inside fenced
// code blocks, where `](` and `#` are code.
func prose(text string) []line {
	var lines []line
	fence := ""
	for i, l := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(l)
		switch {
		case fence == "" && (strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~")):
			fence = trimmed[:3]
		case fence != "" && strings.HasPrefix(trimmed, fence):
			fence = ""
		case fence == "":
			lines = append(lines, line{i + 1, l})
		}
	}
	return lines
}

// hasAnchor reports whether the markdown file at path has a heading whose
// GitHub anchor is frag.
func hasAnchor(t *testing.T, path, frag string) bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, l := range prose(string(b)) {
		if !strings.HasPrefix(l.text, "#") {
			continue
		}
		// A repeated heading's anchor is numbered: #a, #a-1, #a-2.
		a := anchor(strings.TrimLeft(l.text, "#"))
		if k := seen[a]; k > 0 {
			seen[a]++
			a += "-" + strconv.Itoa(k)
		} else {
			seen[a] = 1
		}
		if a == frag {
			return true
		}
	}
	return false
}

// anchor is GitHub's anchor of a heading: lower case, punctuation but
// hyphens and underscores dropped, spaces made hyphens.
func anchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// testName is a Go test's name written as code in a page: `TestX`.
var testName = regexp.MustCompile("`(Test[A-Z][A-Za-z0-9_]*)`")

// TestNamedTestsExist checks that every test a page names as code
// (`TestUIRunbookRun`) is a test function of the repository, so that a
// renamed test does not leave a reader looking for one that is gone.
func TestNamedTestsExist(t *testing.T) {
	funcs := map[string]bool{}
	decl := regexp.MustCompile(`(?m)^func (Test[A-Za-z0-9_]*)\(`)
	err := filepath.WalkDir("..", func(path string, d os.DirEntry, err error) error {
		if err != nil && d != nil && d.IsDir() {
			return filepath.SkipDir // a directory this user may not read (serve's data/pg)
		}
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "data" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range decl.FindAllStringSubmatch(string(b), -1) {
			funcs[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !funcs["TestNamedTestsExist"] {
		t.Fatal("found no test functions")
	}
	for _, p := range readPages(t) {
		for i, l := range strings.Split(p.text, "\n") {
			for _, m := range testName.FindAllStringSubmatch(l, -1) {
				if !funcs[m[1]] {
					t.Errorf("%s:%d: names %s, which no _test.go file defines", p.name, i+1, m[1])
				}
			}
		}
	}
}
