package main

import (
	"log/slog"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestNATSReconnectLogNamesTheServerAndTheOutage: when nats-server goes
// away and comes back, the backend's `nats disconnected` line names the
// server it was connected to, and its `nats reconnected` line the server
// it is connected to again and how long the connection was down (at
// least the outage the test held). Before, the reconnect line said
// neither and the disconnect line only the error.
func TestNATSReconnectLogNamesTheServerAndTheOutage(t *testing.T) {
	ns := testenv.NATSServer(t, &server.Options{})
	port := ns.Addr().(*net.TCPAddr).Port
	dir := filepath.Dir(ns.StoreDir())
	cfg := config.Default()
	cfg.DatabaseURL = testenv.Postgres(t)
	cfg.NATS.URL = ns.ClientURL()
	var logs testenv.LogBuffer
	b, err := openBackend(t.Context(), cfg, "api", slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()

	ns.Shutdown()
	ns.WaitForShutdown()
	testenv.WaitUntil(t, 10*time.Second, "the nats disconnected line", func() bool {
		return strings.Contains(logs.String(), `msg="nats disconnected"`)
	})
	const held = 500 * time.Millisecond
	pause(t.Context(), held)
	testenv.NATSServer(t, &server.Options{Port: port, StoreDir: dir})
	testenv.WaitUntil(t, 20*time.Second, "the nats reconnected line", func() bool {
		return strings.Contains(logs.String(), `msg="nats reconnected"`)
	})

	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	line := func(msg string) string {
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, `msg="`+msg+`"`) {
				return l
			}
		}
		return ""
	}
	if l := line("nats disconnected"); !strings.Contains(l, " url="+url) {
		t.Fatalf("the disconnect line does not name the server %s:\n%s", url, l)
	}
	l := line("nats reconnected")
	if !strings.Contains(l, " url="+url) {
		t.Fatalf("the reconnect line does not name the server %s:\n%s", url, l)
	}
	m := regexp.MustCompile(` down=(\S+)`).FindStringSubmatch(l)
	if m == nil {
		t.Fatalf("the reconnect line does not say how long the connection was down:\n%s", l)
	}
	down, err := time.ParseDuration(m[1])
	if err != nil || down < held {
		t.Fatalf("the reconnect line's down=%s: want at least the %s the server was held down (%v):\n%s", m[1], held, err, l)
	}
	t.Logf("%s", l)
}
