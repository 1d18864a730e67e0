package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestMain(m *testing.M) { Main(m) }

func TestPostgresDatabasesAreIsolatedAndMigrated(t *testing.T) {
	ctx := Context(t)
	began := time.Now()
	a := Postgres(t)
	t.Logf("first database (cluster start + template migration) in %v", time.Since(began))
	began = time.Now()
	b := Postgres(t)
	t.Logf("second database in %v", time.Since(began))
	if a == b {
		t.Fatalf("both tests got %s", a)
	}
	ca, err := pgx.Connect(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close(ctx)
	cb, err := pgx.Connect(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close(ctx)

	for _, conn := range []*pgx.Conn{ca, cb} {
		var version int64
		if err := conn.QueryRow(ctx, "SELECT max(version_id) FROM goose_db_version").Scan(&version); err != nil || version < 1 {
			t.Fatalf("database not migrated: version %d, %v", version, err)
		}
	}
	if _, err := ca.Exec(ctx, "CREATE TABLE only_in_a (x int)"); err != nil {
		t.Fatal(err)
	}
	var found bool
	if err := cb.QueryRow(ctx, "SELECT to_regclass('only_in_a') IS NOT NULL").Scan(&found); err != nil || found {
		t.Fatalf("table leaked into the other database: %v, %v", found, err)
	}
}

func TestPostgresDatabaseIsDropped(t *testing.T) {
	ctx := Context(t)
	var dsn string
	t.Run("user", func(t *testing.T) {
		dsn = Postgres(t)
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn // left open on purpose: the drop must force it closed
	})
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	name := cfg.Database
	cfg.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil || exists {
		t.Fatalf("database still exists after the test: %v, %v", exists, err)
	}
}

func TestNATS(t *testing.T) {
	ctx := Context(t)
	url := NATS(t)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "t.x", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if other := NATS(t); other == url {
		t.Fatalf("two servers share %s", url)
	}
}

// TestWatchdogCleansUpAfterCrash runs TestCrash in a child test binary that
// dies without cleaning up, and waits for the watchdog to stop its cluster
// and remove its directory.
func TestWatchdogCleansUpAfterCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a second cluster")
	}
	cmd := exec.CommandContext(Context(t), os.Args[0], "-test.run=^TestCrash$", "-test.v")
	cmd.Env = append(os.Environ(), "TESTENV_CRASH=1")
	out, err := cmd.Output()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var dir string
	var pid int
	for sc := bufio.NewScanner(strings.NewReader(string(out))); sc.Scan(); {
		if rest, ok := strings.CutPrefix(sc.Text(), "crash: "); ok {
			d, p, _ := strings.Cut(rest, " ")
			dir = d
			pid, _ = strconv.Atoi(p)
		}
	}
	if dir == "" || pid == 0 {
		t.Fatalf("no cluster reported by the child:\n%s", out)
	}
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		_, statErr := os.Stat(dir)
		alive := syscall.Kill(pid, 0) == nil && !isZombie(pid)
		if errors.Is(statErr, os.ErrNotExist) && !alive {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 20s: postmaster %d alive=%v, %s: %v", pid, alive, dir, statErr)
		}
		<-tick.C
	}
}

// TestCrash is TestWatchdogCleansUpAfterCrash's child: it starts the cluster
// and exits without cleaning up.
func TestCrash(t *testing.T) {
	if os.Getenv("TESTENV_CRASH") != "1" {
		t.Skip("run by TestWatchdogCleansUpAfterCrash")
	}
	Postgres(t)
	b, err := os.ReadFile(filepath.Join(cluster.dir, "data", "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _, _ := strings.Cut(string(b), "\n")
	fmt.Printf("crash: %s %s\n", cluster.dir, pid)
	os.Exit(3)
}

// isZombie reports whether pid has exited but not been reaped, which is
// what an orphaned postmaster looks like under a PID 1 that does not reap.
func isZombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}
