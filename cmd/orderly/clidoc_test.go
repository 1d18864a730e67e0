package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestCLIDocNamesEveryCommand: docs/cli.md names every command of the
// binary a user can see in `orderly --help` (and their subcommands), so
// that a new command is not left for the reader to stumble on.
func TestCLIDocNamesEveryCommand(t *testing.T) {
	doc, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	root := (&app{}).rootCommand()
	root.InitDefaultCompletionCmd()
	n := 0
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Hidden || sub.Name() == "help" {
				continue
			}
			path := sub.CommandPath()
			if c == root || !strings.HasPrefix(path, "orderly completion ") {
				n++
				short := strings.TrimPrefix(path, "orderly ")
				if !strings.Contains(string(doc), "`"+path) && !strings.Contains(string(doc), "## "+short+"\n") {
					t.Errorf("docs/cli.md does not name `%s`", path)
				}
			}
			walk(sub)
		}
	}
	walk(root)
	if n < 10 {
		t.Fatalf("found only %d commands", n)
	}
}

// cliSections splits docs/cli.md at its "## " headings: the heading's
// first word (a command, or "Connecting") and the text under it.
func cliSections(doc string) map[string]string {
	out := map[string]string{}
	cur := ""
	for _, l := range strings.Split(doc, "\n") {
		if h, ok := strings.CutPrefix(l, "## "); ok {
			cur, _, _ = strings.Cut(h, " ")
			continue
		}
		out[cur] += l + "\n"
	}
	return out
}

// TestCLIDocNamesEveryFlag checks the flags of docs/cli.md against the
// binary's, both ways: a flag of a command with a section of its own
// (submit, get, logs, ls, cancel, hosts, runbook) is named in that
// section, or in "Connecting" for --url, --token and --data-dir; a flag
// of another command is named in some page of docs/ (the one the "Other
// commands" table points to); and every flag a section's flag table
// lists is one its command has, with the short form the table gives.
func TestCLIDocNamesEveryFlag(t *testing.T) {
	raw, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	sections := cliSections(string(raw))
	pages, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	for _, p := range pages {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		all.Write(b)
	}
	root := (&app{}).rootCommand()
	// has maps a section's command to the flags (and their short forms)
	// of it and its subcommands.
	has := map[string]map[string]bool{}
	n := 0
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Hidden || sub.Name() == "help" || sub.Name() == "completion" {
				continue
			}
			top := strings.Fields(strings.TrimPrefix(sub.CommandPath(), "orderly "))[0]
			sub.LocalFlags().VisitAll(func(f *pflag.Flag) {
				if f.Hidden {
					return
				}
				n++
				name := "--" + f.Name
				if has[top] == nil {
					has[top] = map[string]bool{}
				}
				has[top][name] = true
				if f.Shorthand != "" {
					has[top][name+" -"+f.Shorthand] = true
				}
				section, ok := sections[top]
				named := regexp.MustCompile("(?:^|[^a-z0-9-])" + regexp.QuoteMeta(name) + "(?:[^a-z0-9-]|$)")
				switch {
				case ok && !named.MatchString(section) && !strings.Contains(sections["Connecting"], "`"+name+"`"):
					t.Errorf("docs/cli.md's section %s does not name `%s %s`", top, sub.CommandPath(), name)
				case !ok && !named.MatchString(all.String()):
					t.Errorf("no page of docs/ names `%s %s`", sub.CommandPath(), name)
				}
			})
			walk(sub)
		}
	}
	walk(root)
	if n < 40 {
		t.Fatalf("found only %d flags", n)
	}
	// A row of a flag table: "| `--env K=V`, `-e` | …".
	row := regexp.MustCompile("^\\| (`--?[a-z].*?) \\| ")
	flag := regexp.MustCompile("`(--?[a-zA-Z][a-z0-9-]*)")
	rows := 0
	for top, text := range sections {
		for _, l := range strings.Split(text, "\n") {
			m := row.FindStringSubmatch(l)
			if m == nil {
				continue
			}
			rows++
			var long string
			for _, f := range flag.FindAllStringSubmatch(m[1], -1) {
				switch name := f[1]; {
				case strings.HasPrefix(name, "--"):
					long = name
					if !has[top][long] {
						t.Errorf("docs/cli.md's section %s lists %s, which `orderly %s` does not have", top, long, top)
					}
				case !has[top][long+" "+name]:
					t.Errorf("docs/cli.md's section %s gives %s as the short form of %s; `orderly %s` does not", top, name, long, top)
				}
			}
		}
	}
	if rows < 20 {
		t.Fatalf("read only %d rows of docs/cli.md's flag tables", rows)
	}
}

// TestConfigDocListsServerFlags checks the flags table of docs/config.md
// ("Sources and precedence") against serve, api, worker and migrate, both
// ways: each flag of theirs that sets a key is a row, with the key the
// flag is named after and exactly the commands that take it.
func TestConfigDocListsServerFlags(t *testing.T) {
	doc, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^ *\\| `(--[a-z-]+)` \\| `([a-z_.]+)` \\| (`[a-z]+`(?:, `[a-z]+`)*) \\|$")
	listed := map[string][]string{}
	for _, m := range row.FindAllStringSubmatch(string(doc), -1) {
		if want := strings.NewReplacer(".", "-", "_", "-").Replace(m[2]); "--"+want != m[1] {
			t.Errorf("docs/config.md says %s sets `%s`; the flag of that key is --%s", m[1], m[2], want)
		}
		if !strings.Contains(string(doc), "| `"+m[2]+"` |") {
			t.Errorf("docs/config.md's flags table names `%s`, which its key tables do not", m[2])
		}
		for _, c := range strings.Split(m[3], ", ") {
			listed[m[1]] = append(listed[m[1]], strings.Trim(c, "`"))
		}
	}
	if len(listed) < 5 {
		t.Fatalf("read only %d rows of docs/config.md's flags table", len(listed))
	}
	root := (&app{}).rootCommand()
	has := map[string][]string{}
	for _, name := range []string{"serve", "api", "worker", "migrate"} {
		c, _, err := root.Find([]string{name})
		if err != nil || c.Name() != name {
			t.Fatalf("no command %s: %v", name, err)
		}
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if f.Name != "config" && f.Name != "help" {
				has["--"+f.Name] = append(has["--"+f.Name], name)
			}
		})
	}
	for flag, cmds := range has {
		if got := listed[flag]; !slices.Equal(got, cmds) {
			t.Errorf("docs/config.md's flags table gives %s to %q; the commands that take it are %q", flag, got, cmds)
		}
	}
	for flag := range listed {
		if has[flag] == nil {
			t.Errorf("docs/config.md's flags table lists %s, which no server command takes", flag)
		}
	}
}
