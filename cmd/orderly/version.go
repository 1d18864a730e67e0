package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// buildFacts are what `orderly version` and `orderly --version` print: the
// version (binaryVersion), the Go toolchain that built the binary and the
// platform it runs on, and the commit it was built from when Go recorded
// one (a `go build` in a git checkout; not a build from a tarball, nor `go
// install …@vX`, whose version is the module's).
type buildFacts struct {
	Version      string `json:"version"`
	Go           string `json:"go"`
	Platform     string `json:"platform"`
	Revision     string `json:"revision,omitempty"`
	RevisionTime string `json:"revision_time,omitempty"`
	Modified     bool   `json:"modified,omitempty"`
}

func buildFactsOf(stamped string, info *debug.BuildInfo) buildFacts {
	f := buildFacts{Version: versionOf(stamped, info), Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if info == nil {
		return f
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			f.Revision = s.Value
		case "vcs.time":
			f.RevisionTime = s.Value
		case "vcs.modified":
			f.Modified = s.Value == "true"
		}
	}
	return f
}

// text is the facts as lines; the first is cobra's own `--version` line,
// "orderly version V", which scripts may already read.
func (f buildFacts) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "orderly version %s\n", f.Version)
	fmt.Fprintf(&b, "go: %s %s\n", f.Go, f.Platform)
	if f.Revision != "" {
		fmt.Fprintf(&b, "revision: %s", f.Revision)
		if f.RevisionTime != "" {
			fmt.Fprintf(&b, " (%s)", f.RevisionTime)
		}
		if f.Modified {
			b.WriteString(", with uncommitted changes")
		}
		b.WriteString("\n")
	}
	return b.String()
}

func currentBuildFacts() buildFacts {
	info, _ := debug.ReadBuildInfo()
	return buildFactsOf(version, info)
}

// versionCommand is `orderly version`, which prints what `orderly
// --version` prints (both spellings are cobra's convention; only the flag
// existed, and `orderly version` was an unknown command).
func (a *app) versionCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, the Go version and the commit the binary was built from",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			f := currentBuildFacts()
			if asJSON {
				return writeValue(a.stdout, f)
			}
			_, err := fmt.Fprint(a.stdout, f.text())
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the facts as JSON")
	return cmd
}
