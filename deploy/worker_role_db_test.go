package deploy

import (
	"bytes"
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/pgembed"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestWorkerRoleSQLInAnotherDatabaseSaysWhichToUse: docs/deploy.md's
// install ran worker-role.sql with no database named, so psql run as
// postgres connected to the database postgres, which has no orderly
// tables, and the file stopped on "null values cannot be formatted as an
// SQL identifier" (decisions.md, hI21). It now stops before anything,
// naming the database it ran in and the one to use, and makes no role.
func TestWorkerRoleSQLInAnotherDatabaseSaysWhichToUse(t *testing.T) {
	dsn := testenv.Postgres(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	empty := strings.TrimPrefix(u.Path, "/") + "_empty"
	conn := connect(t, dsn)
	if _, err := conn.Exec(context.Background(), "CREATE DATABASE "+empty); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := conn.Exec(context.Background(), "DROP DATABASE "+empty); err != nil {
			t.Errorf("drop database %s: %v", empty, err)
		}
	})
	u.Path = "/" + empty
	password := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(password, []byte("a password of thirty-two letters"), 0o600); err != nil {
		t.Fatal(err)
	}
	bin, err := pgembed.FindBinaries()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	const login = "orderly_worker_wrongdb"
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "psql"), "-X", "-d", u.String(),
		"-v", "login="+login, "-v", "password_file="+password, "-f", roleSQL)
	cmd.Env = slices.DeleteFunc(os.Environ(), func(e string) bool { return strings.HasPrefix(e, "PG") })
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err == nil {
		t.Fatalf("worker-role.sql in a database without orderly's tables succeeded:\n%s", out.String())
	}
	for _, want := range []string{"database " + empty + " has no orderly tables", "psql -d orderly", "orderly migrate up"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("worker-role.sql in the wrong database says, without %q:\n%s", want, out.String())
		}
	}
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM pg_roles WHERE rolname = $1", login).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("worker-role.sql in the wrong database made the login %s", login)
	}
}
