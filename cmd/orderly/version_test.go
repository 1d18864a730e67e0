package main

import (
	"runtime/debug"
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
