package deploy

import (
	"bufio"
	"os"
	"strings"
	"testing"
)

// stage is one FROM … AS name section of a Dockerfile.
type stage struct {
	name, base string
	lines      []string // instructions after FROM, continuation lines joined
}

// parseDockerfile splits a Dockerfile into its stages: enough to check
// what the image promises without a Docker engine.
func parseDockerfile(t *testing.T, path string) []stage {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stages []stage
	var cur string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur == "") {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur += strings.TrimSuffix(line, "\\") + " "
			continue
		}
		line, cur = cur+line, ""
		if line == "" {
			continue
		}
		fields := strings.Fields(line)
		if strings.EqualFold(fields[0], "FROM") {
			s := stage{base: fields[1]}
			if len(fields) == 4 && strings.EqualFold(fields[2], "AS") {
				s.name = fields[3]
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) == 0 {
			if strings.EqualFold(fields[0], "ARG") {
				continue
			}
			t.Fatalf("%s: %q before the first FROM", path, line)
		}
		stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, line)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return stages
}

// user is the last USER of a stage, "" when it sets none.
func (s stage) user() string {
	u := ""
	for _, l := range s.lines {
		if f := strings.Fields(l); strings.EqualFold(f[0], "USER") && len(f) > 1 {
			u = f[1]
		}
	}
	return u
}

// TestDockerfile checks the image's promises: a multi-stage build of a
// static binary, and run stages that are not root.
func TestDockerfile(t *testing.T) {
	stages := parseDockerfile(t, "../Dockerfile")
	byName := map[string]stage{}
	for _, s := range stages {
		byName[s.name] = s
	}
	build, ok := byName["build"]
	if !ok || !strings.HasPrefix(build.base, "golang:") {
		t.Fatalf("no build stage on a golang image: %+v", stages)
	}
	if !strings.Contains(strings.Join(build.lines, "\n"), "CGO_ENABLED=0") {
		t.Error("the binary is not built with CGO_ENABLED=0 (static)")
	}
	if !strings.Contains(byName["api"].base, "distroless") {
		t.Errorf("api stage is on %s, not distroless", byName["api"].base)
	}
	for _, name := range []string{"api", "worker"} {
		s, ok := byName[name]
		if !ok {
			t.Errorf("no %s stage", name)
			continue
		}
		if u := s.user(); u == "" || u == "root" || u == "0" || strings.HasPrefix(u, "0:") || strings.HasPrefix(u, "root:") {
			t.Errorf("%s stage runs as %q, not a non-root user", name, u)
		}
	}
	if last := stages[len(stages)-1]; last.base != "api" {
		t.Errorf("a plain docker build makes %s, not the api stage", last.base)
	}
}
