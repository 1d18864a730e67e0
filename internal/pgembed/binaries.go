package pgembed

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// ErrNoBinaries is wrapped by FindBinaries when no PostgreSQL server
// installation can be found, so that callers can tell a missing install
// apart from a broken one.
// ErrUnreachable is returned when the postgres OS user cannot enter a
// parent of the cluster directory (e.g. a data dir under /root).
var ErrUnreachable = errors.New("cluster directory unreachable for the postgres user")

// ErrNoBinaries is returned when no PostgreSQL server binaries are found.
var ErrNoBinaries = errors.New("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under /usr/lib/postgresql/*/bin: install them (Debian/Ubuntu: apt-get install postgresql) or pass --database-url")

// debianRoot is where Debian and Ubuntu install one directory per major
// version, none of which is on PATH by default.
const debianRoot = "/usr/lib/postgresql"

// FindBinaries returns the directory holding initdb, pg_ctl and postgres:
// the real directory (symlinks resolved) of pg_ctl on PATH when initdb is on
// PATH too, else the highest major version under /usr/lib/postgresql/*/bin.
// The error wraps ErrNoBinaries when there is none.
func FindBinaries() (string, error) {
	return findBinaries(os.Getenv("PATH"), debianRoot)
}

// findBinaries is FindBinaries with its inputs explicit, for tests.
func findBinaries(pathEnv, root string) (string, error) {
	if dir, ok := fromPath(pathEnv); ok {
		return dir, nil
	}
	entries, err := os.ReadDir(root)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("find postgresql binaries: %w", err)
	}
	type candidate struct {
		dir     string
		version []int
	}
	var found []candidate
	for _, e := range entries {
		version, ok := parseVersion(e.Name())
		if !ok {
			continue
		}
		dir := filepath.Join(root, e.Name(), "bin")
		if hasAll(dir) {
			found = append(found, candidate{dir, version})
		}
	}
	if len(found) == 0 {
		return "", ErrNoBinaries
	}
	best := slices.MaxFunc(found, func(a, b candidate) int { return slices.Compare(a.version, b.version) })
	return best.dir, nil
}

// fromPath looks pg_ctl and initdb up in the directories of pathEnv, the way
// exec.LookPath would, and returns the real directory of pg_ctl.
func fromPath(pathEnv string) (string, bool) {
	pgCtl, ok := lookIn(pathEnv, "pg_ctl")
	if !ok {
		return "", false
	}
	if _, ok := lookIn(pathEnv, "initdb"); !ok {
		return "", false
	}
	real, err := filepath.EvalSymlinks(pgCtl)
	if err != nil {
		return "", false
	}
	dir := filepath.Dir(real)
	if !hasAll(dir) {
		return "", false
	}
	return dir, true
}

// lookIn finds an executable called name in the directories of pathEnv.
func lookIn(pathEnv, name string) (string, bool) {
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, name)
		if isExecutable(p) {
			return p, true
		}
	}
	return "", false
}

// hasAll reports whether dir holds every program Start runs. pg_ctl finds
// postgres in its own directory, so all three must live side by side.
func hasAll(dir string) bool {
	for _, name := range [...]string{"initdb", "pg_ctl", "postgres"} {
		if !isExecutable(filepath.Join(dir, name)) {
			return false
		}
	}
	return true
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// parseVersion reads a directory name such as "15" or "9.6" as numbers so
// that 10 sorts above 9.6.
func parseVersion(name string) ([]int, bool) {
	var v []int
	for part := range strings.SplitSeq(name, ".") {
		n, err := strconv.Atoi(part)
		if err != nil || n < 0 {
			return nil, false
		}
		v = append(v, n)
	}
	return v, len(v) > 0
}
