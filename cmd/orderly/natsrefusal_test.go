package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/orderly-run/orderly/internal/natsembed"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestWorkerStatusSaysNATSRefusesIt: a worker whose key the NATS servers
// stop accepting while it runs (its user removed from auth.conf, the
// server reloaded) kept saying "consuming the orders of host h1" in its
// systemd status, reconnecting and refused each time. Its status now
// says it is refused, naming the seed, until the servers accept the key
// again (the user back, another reload), and then what the worker does.
// A real nats-server with the users in an included auth.conf, reloaded
// with SIGHUP; `orderly api` and `orderly worker` processes.
func TestWorkerStatusSaysNATSRefusesIt(t *testing.T) {
	dsn := testenv.Postgres(t)
	dir := startupDir(t, "onr-")
	creds, err := natsembed.EnsureCredentials(filepath.Join(dir, "creds"), "h0", []string{"h1"})
	if err != nil {
		t.Fatal(err)
	}
	public := func(seedFile string) string {
		t.Helper()
		seed, err := os.ReadFile(seedFile)
		if err != nil {
			t.Fatal(err)
		}
		kp, err := nkeys.ParseDecoratedNKey(seed)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := kp.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		return pub
	}
	apiKey, workerKey := public(creds.API), public(creds.Workers["h1"])
	authConf := filepath.Join(dir, "auth.conf")
	writeAuth := func(keys ...string) {
		t.Helper()
		var users []string
		for _, k := range keys {
			users = append(users, fmt.Sprintf("    {nkey: %s}", k))
		}
		conf := "authorization {\n  users: [\n" + strings.Join(users, "\n") + "\n  ]\n}\n"
		if err := os.WriteFile(authConf, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeAuth(apiKey, workerKey)
	ns := newNATSServer(t, dir, "include auth.conf\n")
	ns.start()

	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conf := writeStartupConfig(t, dir, dsn, ns.url())
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + dir}
	startFaultProc(t, "api", filepath.Join(dir, "api.log"), append(env, "ORDERLY_NATS__NKEY="+creds.API), orderlyBin,
		"api", "--config", conf, "--listen", fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	worker := startFaultProc(t, "worker", filepath.Join(dir, "worker.log"),
		append(env, "ORDERLY_NATS__NKEY="+creds.Workers["h1"], "NOTIFY_SOCKET="+sock,
			"ORDERLY_NATS__LEASE_TTL=2s", "ORDERLY_NATS__HEARTBEAT=300ms"),
		orderlyBin, "worker", "--config", conf, "--host", "h1")
	// until reads the worker's notifications until one matches, and
	// returns it.
	until := func(what string, match func(string) bool) string {
		t.Helper()
		if err := conn.SetReadDeadline(time.Now().Add(90 * time.Second)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		var got []string
		for {
			n, err := conn.Read(buf)
			if err != nil {
				t.Fatalf("no notification %s (got %q): %v\nworker:\n%s", what, got, err, logTail(worker.log, 30))
			}
			if msg := string(buf[:n]); match(msg) {
				return msg
			} else {
				got = append(got, msg)
			}
		}
	}
	consuming := func(msg string) bool { return msg == "STATUS=consuming the orders of host h1" }
	until("that it consumes", consuming)

	writeAuth(apiKey) // the worker's user removed
	ns.proc.signal(syscall.SIGHUP)
	msg := until("that NATS refuses it", func(msg string) bool { return strings.HasPrefix(msg, "STATUS=refused by NATS") })
	if !strings.Contains(strings.ToLower(msg), "authorization violation") || !strings.Contains(msg, "nats.nkey "+creds.Workers["h1"]) {
		t.Errorf("the refusal's status %q names neither the error nor the seed", msg)
	}

	t.Logf("refused: %s", msg)
	writeAuth(apiKey, workerKey) // accepted again
	ns.proc.signal(syscall.SIGHUP)
	until("that it consumes again", consuming)
}

// TestNATSRefusalHoldsTheWorkersLines: while the servers refuse the
// credential, the worker's own lines (its tenure ending, taking the host
// again) are kept, not sent over the refusal; the refusal is said once
// however often a reconnect is refused, and the acceptance says the
// worker's latest line.
func TestNATSRefusalHoldsTheWorkersLines(t *testing.T) {
	var sent []string
	r := newNATSRefusal("nats.nkey /etc/orderly/worker.nk")
	r.status("before the worker's start") // no notify yet: nothing sent
	r.start(func(s string) { sent = append(sent, s) })
	r.status("consuming the orders of host h1")
	r.refuse(nats.ErrAuthorization)
	r.refuse(nats.ErrAuthorization) // a reconnect refused again
	r.status("taking host h1 again: nats: connection closed")
	r.accept()
	r.accept() // a reconnect after an ordinary disconnect
	want := []string{
		"consuming the orders of host h1",
		"refused by NATS: nats: authorization violation (the credential in nats.nkey /etc/orderly/worker.nk; the servers' auth.conf); orders wait, reconnecting",
		"taking host h1 again: nats: connection closed",
	}
	if !slices.Equal(sent, want) {
		t.Errorf("sent %q, want %q", sent, want)
	}
	if !isNATSRefusal(fmt.Errorf("wrapped: %w", nats.ErrAuthRevoked)) || isNATSRefusal(nats.ErrConnectionClosed) || isNATSRefusal(nil) {
		t.Error("isNATSRefusal tells a refusal from a closed connection wrongly")
	}
}
