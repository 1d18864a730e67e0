package docs

import (
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

var (
	// shellUse is a variable a shell line expands: $NAME or ${NAME.
	shellUse = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)`)
	// shellSet is a variable a shell line sets: NAME=…, export NAME=…,
	// read [-flags] NAME, for NAME in.
	shellSet = regexp.MustCompile(`(?:^|[\s;(])([A-Za-z_][A-Za-z0-9_]*)=|\bread(?:\s+-\w+)*\s+([A-Za-z_][A-Za-z0-9_]*)|\bfor\s+([A-Za-z_][A-Za-z0-9_]*)\s+in\b`)
)

// givenToShell are the variables a reader's shell has before any example
// runs.
var givenToShell = map[string]bool{"HOME": true, "PATH": true, "PWD": true, "TMPDIR": true, "USER": true}

// TestShellExamplesSetTheirVariables checks every shell block of
// README.md and of these pages (decisions.md's are records of what was
// run, not examples): a variable it expands is one it sets itself, one
// every shell has, or, in a runbook's script, one the worker gives a run
// (RUNBOOK_*). Copied into a fresh shell, an example that read a
// variable only another page set (curl with $ORDERLY_URL, $T, $URL)
// ran with an empty one: `curl: (3) URL using bad/illegal format`, or
// an empty token answered 401.
func TestShellExamplesSetTheirVariables(t *testing.T) {
	for _, p := range readPages(t) {
		if p.name == "decisions.md" {
			continue
		}
		for _, block := range shellBlocks(p.text) {
			set := map[string]bool{}
			for _, m := range shellSet.FindAllStringSubmatch(block.text, -1) {
				set[m[1]+m[2]+m[3]] = true
			}
			var unset []string
			for _, m := range shellUse.FindAllStringSubmatch(block.text, -1) {
				name := m[1]
				if !set[name] && !givenToShell[name] && !strings.HasPrefix(name, "RUNBOOK_") && !slices.Contains(unset, name) {
					unset = append(unset, name)
				}
			}
			if len(unset) > 0 {
				sort.Strings(unset)
				t.Errorf("%s:%d: the example expands $%s without setting it: set it in the block, as a reader copies one block into a fresh shell", p.name, block.n, strings.Join(unset, ", $"))
			}
		}
	}
}

// shellBlocks returns the fenced blocks of a markdown text written in a
// shell (sh, bash, shell, console), each with the line of its fence.
func shellBlocks(text string) []line {
	var blocks []line
	var cur *line
	for i, l := range strings.Split(text, "\n") {
		fence, ok := strings.CutPrefix(strings.TrimSpace(l), "```")
		switch {
		case ok && cur == nil:
			switch strings.TrimSpace(fence) {
			case "sh", "bash", "shell", "console":
				blocks = append(blocks, line{n: i + 1})
				cur = &blocks[len(blocks)-1]
			default:
				cur = &line{} // another language's block, skipped
			}
		case ok:
			cur = nil
		case cur != nil:
			cur.text += l + "\n"
		}
	}
	return blocks
}
