package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/pflag"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/testenv"
	"github.com/orderly-run/orderly/migrations"
)

func runCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(t.Context(), append([]string{"orderly"}, args...), nil, strings.NewReader(""), &out, &errb)
	return out.String() + errb.String(), err
}

// TestMigrateNamesAnUnknownVerb checks that a mistyped verb is the error,
// even with no database configured (it said "no database" before).
func TestMigrateNamesAnUnknownVerb(t *testing.T) {
	out, err := runCmd(t, "migrate", "stauts")
	if err == nil || !strings.Contains(err.Error(), `"stauts"`) || strings.Contains(err.Error(), "no database") {
		t.Fatalf("migrate stauts: %v\n%s", err, out)
	}
}

// TestMigrateSaysWhereTheURLIs: migrate has no default database, and its
// help said "default for serve: a managed local PostgreSQL", so a newcomer
// next to a running serve expected it to find serve's. Its help and its
// refusal now say where serve's URL is.
func TestMigrateSaysWhereTheURLIs(t *testing.T) {
	out, err := runCmd(t, "migrate", "--help")
	if err != nil || strings.Contains(out, "default for serve") || !strings.Contains(out, "orderly serve prints the URL of its own") {
		t.Errorf("migrate --help: %v\n%s", err, out)
	}
	out, err = runCmd(t, "migrate", "status")
	if err == nil || !strings.Contains(err.Error(), "orderly serve prints the URL of its own at start") {
		t.Errorf("migrate status without a database: %v\n%s", err, out)
	}
}

// TestServerHelpSaysWhatIsRequired: api and worker have no managed
// PostgreSQL or embedded NATS, yet their --help said "default for serve"
// for both URLs, which read as a default they have. Each now says the
// URL is required and where serve prints its own; serve keeps its
// defaults.
func TestServerHelpSaysWhatIsRequired(t *testing.T) {
	for _, name := range []string{"api", "worker"} {
		out, err := runCmd(t, name, "--help")
		if err != nil || strings.Contains(out, "default for serve") ||
			!strings.Contains(out, "PostgreSQL URL (required: this, database_url in --config or ORDERLY_DATABASE_URL") ||
			!strings.Contains(out, "NATS URL (required: this, nats.url in --config or ORDERLY_NATS__URL") {
			t.Errorf("%s --help: %v\n%s", name, err, out)
		}
	}
	if out, err := runCmd(t, "serve", "--help"); err != nil || !strings.Contains(out, "PostgreSQL URL (default: a managed local PostgreSQL under the data dir)") {
		t.Errorf("serve --help: %v\n%s", err, out)
	}
}

// TestMigrateCommand runs migrate status, down and up on a real database.
func TestMigrateCommand(t *testing.T) {
	dsn := testenv.Postgres(t) // already migrated
	out, err := runCmd(t, "migrate", "status", "--database-url", dsn)
	if err != nil || !strings.Contains(out, "00001_core.sql") || !strings.Contains(out, "applied") {
		t.Fatalf("status: %v\n%s", err, out)
	}
	// The states make one column, whatever the length of a file's name.
	col := -1
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		i := strings.Index(line, "  applied ")
		if i < 0 || col >= 0 && i != col {
			t.Fatalf("status: the states are not one column:\n%s", out)
		}
		col = i
	}
	if out, err := runCmd(t, "migrate", "down", "--database-url", dsn); err != nil || !strings.Contains(out, "rolled back") {
		t.Fatalf("down: %v\n%s", err, out)
	}
	// A service on an old schema says what to do.
	if out, err := runCmd(t, "worker", "--host", "x", "--database-url", dsn, "--nats-url", "nats://127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "orderly migrate up") {
		t.Fatalf("worker on an old schema: %v\n%s", err, out)
	}
	if out, _ := runCmd(t, "migrate", "status", "--database-url", dsn); !strings.Contains(out, "pending") {
		t.Fatalf("status after down:\n%s", out)
	}
	if out, err := runCmd(t, "migrate", "up", "--database-url", dsn); err != nil || !strings.Contains(out, "applied") {
		t.Fatalf("up: %v\n%s", err, out)
	}
	if out, err := runCmd(t, "migrate", "up", "--database-url", dsn); err != nil || !strings.Contains(out, "up to date") {
		t.Fatalf("second up: %v\n%s", err, out)
	}
	if _, err := runCmd(t, "migrate", "sideways", "--database-url", dsn); err == nil {
		t.Fatal("unknown migrate verb accepted")
	}
	pool, err := pgxpool.New(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	// An index a down that gave up left invalid (migrations,
	// TestUpAfterADownThatGaveUpRebuildsTheIndex): up says it built it.
	if _, err := pool.Exec(t.Context(), `UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'orders_parent_run'::regclass`); err != nil {
		t.Fatal(err)
	}
	if out, err := runCmd(t, "migrate", "up", "--database-url", dsn); err != nil || !strings.Contains(out, "rebuilt index orders_parent_run") ||
		strings.Contains(out, "up to date") {
		t.Fatalf("up over an invalid index: %v\n%s", err, out)
	}
	// A database a newer orderly migrated: status says so (the list shows
	// only the migrations this binary knows).
	if _, err := pool.Exec(t.Context(), `INSERT INTO goose_db_version (version_id, is_applied) VALUES (999, true)`); err != nil {
		t.Fatal(err)
	}
	out, err = runCmd(t, "migrate", "status", "--database-url", dsn)
	if _, derr := pool.Exec(t.Context(), `DELETE FROM goose_db_version WHERE version_id = 999`); derr != nil {
		t.Fatal(derr)
	}
	if err != nil || !strings.Contains(out, "version 999, newer than this binary's") {
		t.Fatalf("status of a newer database: %v\n%s", err, out)
	}
	// Pool settings in the URL are for the service's pool, not the server.
	if out, err := runCmd(t, "migrate", "up", "--database-url", dsn+"&pool_max_conns=8"); err != nil {
		t.Fatalf("up with pool_max_conns: %v\n%s", err, out)
	}
	if _, err := runCmd(t, "migrate", "status"); err == nil {
		t.Fatal("migrate without a database accepted")
	}
	// Rolled back to nothing, down says so in orderly's words. One down
	// per migration applied, not per version number: a branch's numbers
	// may have a gap (00027 after 00025 on hE12's branch, before the merge renumbered it).
	var applied int
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM goose_db_version WHERE version_id > 0`).Scan(&applied); err != nil {
		t.Fatal(err)
	}
	for range applied {
		if out, err := runCmd(t, "migrate", "down", "--database-url", dsn); err != nil {
			t.Fatalf("down: %v\n%s", err, out)
		}
	}
	if out, err := runCmd(t, "migrate", "down", "--database-url", dsn); err == nil || !strings.Contains(err.Error(), "nothing to roll back") {
		t.Fatalf("down with nothing applied: %v\n%s", err, out)
	}
}

// TestNewerSchemaRefused checks a downgrade: a binary on a database a
// newer orderly migrated refuses it, naming both versions, in every
// command that would use it. Before, migrate up said "up to date", migrate
// down failed with goose's "version not found", and serve, api and worker
// started on a schema they do not know.
func TestNewerSchemaRefused(t *testing.T) {
	dsn := testenv.Postgres(t)
	want, err := migrations.Latest()
	if err != nil {
		t.Fatal(err)
	}
	_, pool := testenv.Store(t, dsn)
	if _, err := pool.Exec(t.Context(), `INSERT INTO goose_db_version (version_id, is_applied) VALUES ($1, true)`, want+1); err != nil {
		t.Fatal(err)
	}
	says := fmt.Sprintf("schema is version %d, newer than this binary's %d", want+1, want)
	for _, args := range [][]string{
		{"migrate", "up"},
		{"migrate", "down"},
		{"serve", "--nats-url", "nats://127.0.0.1:1", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0"},
		{"api", "--nats-url", "nats://127.0.0.1:1"},
		{"worker", "--host", "h1", "--nats-url", "nats://127.0.0.1:1"},
	} {
		// Bounded: a command that accepts the schema waits for NATS.
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		var outb bytes.Buffer
		err := run(ctx, append(append([]string{"orderly"}, args...), "--database-url", dsn), nil, strings.NewReader(""), &outb, &outb)
		cancel()
		out := outb.String()
		if err == nil || !strings.Contains(err.Error(), says) {
			t.Errorf("%s on a newer schema: %v, want %q\n%s", strings.Join(args[:1], " "), err, says, out)
		}
		if strings.Contains(out, "up to date") || strings.Contains(out, "rolled back") {
			t.Errorf("%s on a newer schema said:\n%s", strings.Join(args, " "), out)
		}
	}
	var have int64
	if err := pool.QueryRow(t.Context(), `SELECT max(version_id) FROM goose_db_version`).Scan(&have); err != nil || have != want+1 {
		t.Fatalf("schema version after the refusals: %d, %v; want %d untouched", have, err, want+1)
	}
}

// TestTokenNew prints a token and a config entry whose hash accepts it.
func TestTokenNew(t *testing.T) {
	out, err := runCmd(t, "token", "new", "--name", "deployer", "--role", "deploy")
	if err != nil {
		t.Fatal(err)
	}
	tok := regexp.MustCompile(`token: (\S+)`).FindStringSubmatch(out)
	sum := regexp.MustCompile(`sha256: ([0-9a-f]{64})`).FindStringSubmatch(out)
	if tok == nil || sum == nil || !strings.Contains(out, "name: deployer") || !strings.Contains(out, "roles: [deploy]") {
		t.Fatalf("output:\n%s", out)
	}
	a, err := auth.New(config.Auth{Tokens: []config.Token{{Name: "deployer", SHA256: sum[1], Roles: []string{"deploy"}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.Authenticate("Bearer " + tok[1])
	if err != nil || p.Name != "deployer" || !p.HasRole("deploy") {
		t.Fatalf("printed token does not authenticate: %+v %v", p, err)
	}
	if strings.Count(out, tok[1]) != 1 {
		t.Fatal("the token is printed more than once")
	}

	// The printed lines load as they are, whatever YAML makes of the
	// name and roles; what the config would refuse is refused here.
	for _, name := range []string{"a: b", "123", "#x", "yes", "it's", "ü"} {
		out, err := runCmd(t, "token", "new", "--name", name, "--role", "r]", "--role", "ops")
		if err != nil {
			t.Fatalf("--name %q: %v", name, err)
		}
		tok := regexp.MustCompile(`token: (\S+)`).FindStringSubmatch(out)
		_, lines, _ := strings.Cut(out, "# add to auth.tokens in the config file:\n")
		path := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(path, []byte("auth:\n  tokens:\n"+lines), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, _, err := config.Load(path, nil, nil)
		if err != nil {
			t.Fatalf("--name %q: the printed lines do not load: %v\n%s", name, err, lines)
		}
		a, err := auth.New(cfg.Auth, nil)
		if err != nil {
			t.Fatalf("--name %q: %v", name, err)
		}
		if p, err := a.Authenticate("Bearer " + tok[1]); err != nil || p.Name != name || !p.HasRole("r]") || !p.HasRole("ops") {
			t.Errorf("--name %q: authenticates as %+v, %v", name, p, err)
		}
	}
	for _, name := range []string{"", " ", "jwt:alice", "a\x01b"} {
		if out, err := runCmd(t, "token", "new", "--name", name); err == nil {
			t.Errorf("--name %q: accepted:\n%s", name, out)
		}
	}

	// --replaces prints the entry of a rotation: the printed lines load,
	// and the old token and the new one are the same principal.
	oldTok, oldSum := auth.NewToken()
	out, err = runCmd(t, "token", "new", "--name", "deployer", "--role", "deploy", "--replaces", strings.ToUpper(oldSum))
	if err != nil {
		t.Fatal(err)
	}
	tok = regexp.MustCompile(`token: (\S+)`).FindStringSubmatch(out)
	_, lines, ok := strings.Cut(out, "the old token is refused.\n")
	if tok == nil || !ok || !strings.Contains(lines, "previous_sha256: "+oldSum) {
		t.Fatalf("--replaces output:\n%s", out)
	}
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte("auth:\n  tokens:\n"+lines), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := config.Load(path, nil, nil)
	if err != nil {
		t.Fatalf("--replaces: the printed lines do not load: %v\n%s", err, lines)
	}
	a, err = auth.New(cfg.Auth, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, presented := range []string{oldTok, tok[1]} {
		if p, err := a.Authenticate("Bearer " + presented); err != nil || p.Name != "deployer" || !p.HasRole("deploy") {
			t.Errorf("--replaces: a token of the rotation authenticates as %+v, %v", p, err)
		}
	}
	if out, err := runCmd(t, "token", "new", "--name", "deployer", "--replaces", "abc"); err == nil || !strings.Contains(err.Error(), "--replaces") {
		t.Errorf("--replaces abc: %v\n%s", err, out)
	}
}

// TestSubmitUsageNamesBothForms checks that submit's usage line names
// --hosts (the fan-out) beside --host: it showed --host only.
func TestSubmitUsageNamesBothForms(t *testing.T) {
	out, err := runCmd(t, "submit", "--help")
	if err != nil {
		t.Fatal(err)
	}
	_, usage, _ := strings.Cut(out, "Usage:\n")
	line, _, _ := strings.Cut(usage, "\n")
	if !strings.Contains(line, "--host HOST") || !strings.Contains(line, "--hosts") || !strings.Contains(line, "COMMAND [ARG...]") {
		t.Fatalf("submit's usage line is %q, want both --host and --hosts\n%s", line, out)
	}
}

// TestArgsErrorsShowTheUsage: a wrong number of arguments names what the
// command takes. Usage is silenced, and "accepts 1 arg(s), received 0"
// alone said neither which argument nor how to give it.
func TestArgsErrorsShowTheUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"get"}, "; usage: orderly get ORDER-ID [flags]"},
		{[]string{"submit", "--host", "web-3"}, "; usage: orderly submit (--host HOST | --hosts HOST,...) [flags] [--] COMMAND [ARG...]"},
		{[]string{"migrate"}, "; usage: orderly migrate up|down|status [flags]"},
		{[]string{"action", "run"}, "; usage: orderly action run NAME --host HOST"},
		{[]string{"hosts", "a", "b"}, "; usage: orderly hosts [HOST] [flags]"},
	} {
		out, err := runCmd(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want it to end with the usage %q\n%s", tc.args, err, tc.want, out)
		}
	}
	if out, err := runCmd(t, "get", "--help"); err != nil || !strings.Contains(out, "Usage:") {
		t.Errorf("get --help: %v\n%s", err, out)
	}
}

// TestFlagRulesNameTheFlags: a required flag left out, or two flags that
// exclude each other, are named as they are typed, with the usage line,
// as a wrong number of arguments is. A newcomer's `orderly submit uname`
// said cobra's `at least one of the flags in the group [host hosts] is
// required`, and `action run NAME` without a host `required flag(s)
// "host" not set`, with no usage.
func TestFlagRulesNameTheFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"submit", "uname"}, "--host or --hosts is required; usage: orderly submit (--host HOST | --hosts HOST,...) [flags] [--] COMMAND [ARG...]"},
		{[]string{"submit", "--host", "a", "--hosts", "b", "--", "true"}, "--host and --hosts cannot be given together: give one; usage: orderly submit"},
		{[]string{"submit", "--host", "a", "--stdin", "-", "--stdin-file", "f", "--", "true"}, "--stdin and --stdin-file cannot be given together: give one; usage: orderly submit"},
		{[]string{"action", "run", "restart"}, "--host is required; usage: orderly action run NAME --host HOST"},
		{[]string{"hosts", "--forget", "web-9", "--json"}, "--forget and --json cannot be given together: give one; usage: orderly hosts [HOST] [flags]"},
		{[]string{"runbook", "run", "A.md", "--if-match", `"x"`, "--if-unchanged"}, "--if-match and --if-unchanged cannot be given together: give one; usage: orderly runbook run NAME"},
	} {
		out, err := runCmd(t, tc.args...)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q\n%s", tc.args, err, tc.want, out)
		}
	}
}

// TestWaitTakesNoDuration: submit's and action run's --wait is a bool
// (-w, --wait, --wait=false), and a duration given to it, as runbook
// run's --wait=10m takes one, is refused saying what bounds the run
// instead. It answered strconv's `parsing "10m": invalid syntax`.
func TestWaitTakesNoDuration(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"submit", "--host", "web-3", "--wait=10m", "--", "true"}, "--wait takes no value: it waits until the order ends; to bound the run, give --timeout"},
		{[]string{"submit", "--host", "web-3", "-w=10", "--", "true"}, "give --timeout"},
		{[]string{"action", "run", "restart", "--host", "web-3", "--wait=10m"}, "the action's own timeout bounds the run"},
	} {
		out, err := runCmd(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q\n%s", tc.args, err, tc.want, out)
		}
	}
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"-w"}, true}, {[]string{"--wait"}, true}, {[]string{"--wait=true"}, true}, {[]string{"--wait=false"}, false}, {nil, false},
	} {
		var wait bool
		fs := pflag.NewFlagSet("submit", pflag.ContinueOnError)
		submitWaitFlag(fs, &wait, "")
		if err := fs.Parse(append(tc.args, "cmd")); err != nil || wait != tc.want || fs.Arg(0) != "cmd" {
			t.Errorf("%q: wait %v, %v (args %q), want %v", tc.args, wait, err, fs.Args(), tc.want)
		}
	}
}

// TestDurationFlagsSayTheUnit: a duration flag given a bare number, as a
// newcomer types `--timeout 5`, is refused saying a duration needs a unit
// and how to write one; it said time's "missing unit in duration "5"".
// A value that is no duration at all names an example; a duration the
// flag refuses itself keeps its own refusal.
func TestDurationFlagsSayTheUnit(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"submit", "--host", "web-3", "--timeout", "5", "--", "true"}, "--timeout 5: a duration needs a unit: 5s (seconds), 5m (minutes) or 5h (hours)"},
		{[]string{"submit", "--host", "web-3", "--timeout=1.5", "--", "true"}, "--timeout 1.5: a duration needs a unit: 1.5s (seconds)"},
		{[]string{"submit", "--host", "web-3", "--expires-in", "3600", "--", "true"}, "--expires-in 3600: a duration needs a unit: 3600s (seconds)"},
		{[]string{"submit", "--host", "web-3", "--retry-for", "10", "--", "true"}, "--retry-for 10: a duration needs a unit"},
		{[]string{"runbook", "run", "Hello.md", "--timeout", "60"}, "--timeout 60: a duration needs a unit: 60s (seconds)"},
		{[]string{"action", "run", "restart", "--host", "web-3", "--retry-for", "5"}, "--retry-for 5: a duration needs a unit"},
		{[]string{"submit", "--host", "web-3", "--timeout", "ten", "--", "true"}, `--timeout "ten" is not a duration: give a number and a unit, such as 30s, 10m or 1h30m`},
		{[]string{"submit", "--host", "web-3", "--retry-for", "-3s", "--", "true"}, `invalid argument "-3s" for "--retry-for" flag: must not be negative`},
	} {
		out, err := runCmd(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q\n%s", tc.args, err, tc.want, out)
		}
	}
}
