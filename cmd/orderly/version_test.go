package main

import (
	"encoding/json"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

// TestVersionOf: a build without -ldflags (go build, go install, a
// Dockerfile build without VERSION) reports what Go recorded, not "dev"
// on every host, so GET /v1/hosts tells the hosts an upgrade reached.
func TestVersionOf(t *testing.T) {
	vcs := func(rev, modified string) *debug.BuildInfo {
		return &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}}
	}
	for _, tc := range []struct {
		name    string
		stamped string
		info    *debug.BuildInfo
		want    string
	}{
		{"stamped wins", "v1.4.0", vcs("82c32b893851b81921cd0c9a5ca01efcacaa5ecb", "false"), "v1.4.0"},
		{"go install of a tag", "dev", &debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}}, "v1.4.0"},
		{"go build in a checkout", "dev", vcs("82c32b893851b81921cd0c9a5ca01efcacaa5ecb", "false"), "dev-82c32b893851"},
		{"with changes", "dev", vcs("82c32b893851b81921cd0c9a5ca01efcacaa5ecb", "true"), "dev-82c32b893851-dirty"},
		{"nothing recorded", "dev", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "dev"},
		{"no build info", "dev", nil, "dev"},
	} {
		if got := versionOf(tc.stamped, tc.info); got != tc.want {
			t.Errorf("%s: versionOf = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestVersionCommand: `orderly version` prints what `orderly --version`
// prints (it was an unknown command), the version line first as cobra
// wrote it, then the Go version and, when Go recorded one, the commit;
// --json gives the same facts.
func TestVersionCommand(t *testing.T) {
	cmdOut, err := runCmd(t, "version")
	if err != nil {
		t.Fatalf("orderly version: %v\n%s", err, cmdOut)
	}
	flagOut, err := runCmd(t, "--version")
	if err != nil {
		t.Fatalf("orderly --version: %v\n%s", err, flagOut)
	}
	if cmdOut != flagOut {
		t.Errorf("orderly version printed\n%s\norderly --version printed\n%s", cmdOut, flagOut)
	}
	want := "orderly version " + binaryVersion() + "\ngo: " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"
	if !strings.HasPrefix(cmdOut, want) {
		t.Errorf("orderly version printed\n%s\nwant it to start with\n%s", cmdOut, want)
	}
	out, err := runCmd(t, "version", "--json")
	if err != nil {
		t.Fatalf("orderly version --json: %v\n%s", err, out)
	}
	var got buildFacts
	if err := json.Unmarshal([]byte(out), &got); err != nil || got != currentBuildFacts() || got.Version != binaryVersion() {
		t.Errorf("orderly version --json printed %s (%v), want %+v", out, err, currentBuildFacts())
	}
	if out, err := runCmd(t, "version", "extra"); err == nil {
		t.Errorf("orderly version extra: accepted\n%s", out)
	}

	// The commit lines, from what Go records in a checkout's build.
	info := &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "82c32b893851b81921cd0c9a5ca01efcacaa5ecb"},
		{Key: "vcs.time", Value: "2026-12-04T15:55:16Z"}, {Key: "vcs.modified", Value: "true"}}}
	text := buildFactsOf("v1.4.0", info).text()
	if !strings.HasPrefix(text, "orderly version v1.4.0\ngo: ") ||
		!strings.HasSuffix(text, "\nrevision: 82c32b893851b81921cd0c9a5ca01efcacaa5ecb (2026-12-04T15:55:16Z), with uncommitted changes\n") {
		t.Errorf("facts of a checkout's build:\n%s", text)
	}
	if text := buildFactsOf("v1.4.0", &debug.BuildInfo{}).text(); strings.Contains(text, "revision") {
		t.Errorf("facts of a build without a commit:\n%s", text)
	}
}
