package main

import (
	"os"
	"strings"
	"testing"

	"github.com/spf13/cobra"
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
