package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/postgres"
)

// TestHostMaintenanceCLI puts a host in maintenance and takes it out with
// `orderly hosts --maintenance`, through serve's wiring on the real
// PostgreSQL and NATS: the switch says how many orders wait (left alone),
// `orderly submit` is refused with the reason, the list and the host's
// view show it, and out of maintenance the host takes orders again.
func TestHostMaintenanceCLI(t *testing.T) {
	s := newStack(t)
	cli := func(args ...string) (string, string, error) {
		var out, errb strings.Builder
		err := run(t.Context(), append([]string{"orderly"}, args...), []string{"ORDERLY_URL=" + s.url, "ORDERLY_TOKEN=" + s.token},
			strings.NewReader(""), &out, io.MultiWriter(&errb))
		return out.String(), errb.String(), err
	}
	queued := s.submit(map[string]any{"host": "web-2", "command": "true"}, "", 202)

	out, errs, err := cli("hosts", "web-2", "--maintenance", "on", "--reason", "disk swap")
	if err != nil || !strings.HasPrefix(out, "host web-2 is in maintenance: its new orders are refused (by admin ") ||
		!strings.Contains(out, ": disk swap)\n") || !strings.Contains(out, "\n1 order waits queued for it") {
		t.Fatalf("maintenance on: %v %q %q", err, out, errs)
	}
	// web-2 has no worker yet: no worker ever served the name, which
	// the switch says (a typo leaves the host meant taking orders), and
	// not as "ever": a host forgotten whose orders the retention deleted
	// reads the same.
	if !strings.Contains(errs, "no worker of host web-2 is known: none serves it and none ran an order of it within the retention") {
		t.Errorf("maintenance on for a host no worker served: stderr %q, want it said", errs)
	}
	out, errs, err = cli("submit", "--host", "web-2", "--", "true")
	if err == nil || !strings.Contains(err.Error()+errs, "host web-2 is in maintenance") || !strings.Contains(err.Error()+errs, "disk swap") {
		t.Fatalf("submit to the host in maintenance: %v %q %q, want the refusal with its reason", err, out, errs)
	}
	t.Logf("submit refused: %v %s", err, errs)
	out, errs, err = cli("hosts")
	if err != nil || !strings.Contains(out, "\nweb-2: in maintenance, new orders refused (by admin ") {
		t.Fatalf("hosts: %v %q %q", err, out, errs)
	}
	out, errs, err = cli("hosts", "web-2")
	if err != nil || !strings.Contains(out, "Maintenance:") || !strings.Contains(out, "disk swap (new orders refused)") || !strings.Contains(out, queued.ID.String()) {
		t.Fatalf("hosts web-2: %v %q %q", err, out, errs)
	}
	// Again without --reason: the reason is kept (hB14: it was cleared),
	// and nothing more is logged; --reason '' clears it.
	out, errs, err = cli("hosts", "web-2", "--maintenance", "on")
	if err != nil || !strings.Contains(out, ": disk swap)\n") {
		t.Fatalf("maintenance on again without --reason: %v %q %q, want the reason kept", err, out, errs)
	}
	out, errs, err = cli("hosts", "web-2", "--maintenance", "on", "--reason", "")
	if err != nil || strings.Contains(out, "disk swap") || !strings.HasPrefix(out, "host web-2 is in maintenance: its new orders are refused (by admin ") {
		t.Fatalf("maintenance on with --reason '': %v %q %q, want the reason cleared", err, out, errs)
	}
	pool, err := postgres.Open(t.Context(), s.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var n int
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM host_maintenance_log WHERE host = 'web-2'`).Scan(&n); err != nil || n != 2 {
		t.Errorf("host_maintenance_log of web-2 after on, on, on --reason '': %d rows (%v), want 2", n, err)
	}
	// Forgetting it is refused while it is in maintenance (hB14: 204,
	// and it stayed listed).
	if _, errs, err = cli("hosts", "--forget", "web-2"); err == nil || !strings.Contains(err.Error()+errs, "host web-2 is in maintenance") ||
		!strings.Contains(err.Error()+errs, "orderly hosts web-2 --maintenance off") {
		t.Errorf("--forget of a host in maintenance: %v %q, want it refused, naming the way out", err, errs)
	}
	for _, bad := range [][]string{
		{"hosts", "web-2", "--maintenance", "maybe"},
		{"hosts", "--maintenance", "on"},
		{"hosts", "web-2", "--reason", "x"},
		{"hosts", "web-2", "--maintenance", "on", "--forget"},
	} {
		if _, _, err := cli(bad...); err == nil {
			t.Errorf("%v: accepted", bad)
		}
	}
	out, errs, err = cli("hosts", "web-2", "--maintenance", "off")
	if err != nil || out != "host web-2 is out of maintenance: its new orders are accepted\n" {
		t.Fatalf("maintenance off: %v %q %q", err, out, errs)
	}
	if _, errs, err = cli("submit", "--host", "web-2", "--", "true"); err != nil {
		t.Fatalf("submit after the maintenance: %v %q", err, errs)
	}
	if o := s.get(queued.ID); o.Status != "queued" {
		t.Fatalf("the order queued before: %s, want still queued", o.Status)
	}

	// A host whose worker runs an order: the switch names that order,
	// left alone, and does not call the host unknown.
	s.startWorker("web-3")
	running := s.submit(map[string]any{"host": "web-3", "command": "sleep", "args": []string{"30"}}, "", 202)
	waitUntil(t, 30*time.Second, "the order running", func() bool { return s.get(running.ID).Status == "running" })
	out, errs, err = cli("hosts", "web-3", "--maintenance", "on")
	if err != nil || !strings.Contains(out, "\norder "+running.ID.String()+" runs on it and is left alone\n") || errs != "" {
		t.Fatalf("maintenance on with an order running: %v %q %q, want the order named and nothing on stderr", err, out, errs)
	}
	if _, errs, err = cli("cancel", running.ID.String()); err != nil {
		t.Fatalf("cancel: %v %q", err, errs)
	}
}

// TestMaintenanceOfAForgottenHostSaysSo: a host whose workers ran orders
// and which was then forgotten (orderly hosts HOST --forget) has no
// record, as a name no worker ever served has none, and the switch told
// the operator "no worker has ever served host …" and to suspect a typo,
// though the history shows the orders its workers ran. It says that the
// host was forgotten now; a name never served still gets the warning.
func TestMaintenanceOfAForgottenHostSaysSo(t *testing.T) {
	s := newStack(t)
	cli := func(args ...string) (string, string, error) {
		var out, errb strings.Builder
		err := run(t.Context(), append([]string{"orderly"}, args...), []string{"ORDERLY_URL=" + s.url, "ORDERLY_TOKEN=" + s.token},
			strings.NewReader(""), &out, &errb)
		return out.String(), errb.String(), err
	}
	s.startWorker("web-4")
	ran := s.submit(map[string]any{"host": "web-4", "command": "true"}, "", 202)
	waitUntil(t, 30*time.Second, "the order done", func() bool { return s.get(ran.ID).Status == "succeeded" })
	s.stopWorker("web-4")
	waitUntil(t, 30*time.Second, "the host forgotten", func() bool {
		_, _, err := cli("hosts", "web-4", "--forget")
		return err == nil
	})
	out, errs, err := cli("hosts", "web-4", "--maintenance", "on", "--reason", "rack move")
	if err != nil || !strings.HasPrefix(out, "host web-4 is in maintenance: ") {
		t.Fatalf("maintenance on for the forgotten host: %v %q %q", err, out, errs)
	}
	if strings.Contains(errs, "no worker of host") || !strings.Contains(errs, "host web-4 was forgotten (orderly hosts web-4 --forget)") {
		t.Fatalf("maintenance on for a host forgotten after its worker ran an order: stderr %q, want it called forgotten, not never served", errs)
	}
	// Its orders deleted as the retention deletes them, nothing kept
	// tells it from a typo: the warning says what is known, not that no
	// worker ever served it.
	if _, _, err := cli("hosts", "web-4", "--maintenance", "off"); err != nil {
		t.Fatal(err)
	}
	if n, err := s.b.store.DeleteFinishedBefore(t.Context(), time.Now().Add(time.Hour), 1000); err != nil || n == 0 {
		t.Fatalf("the retention's delete: %d, %v", n, err)
	}
	if _, errs, err = cli("hosts", "web-4", "--maintenance", "on"); err != nil || strings.Contains(errs, "has ever served") ||
		!strings.Contains(errs, "no worker of host web-4 is known: none serves it and none ran an order of it within the retention (a name never served, or a host forgotten longer ago)") {
		t.Fatalf("maintenance on for a host forgotten whose orders the retention deleted: %v %q", err, errs)
	}
	// A name no worker served, with a queued order of its own: the
	// typo warning as before.
	s.submit(map[string]any{"host": "web-5", "command": "true"}, "", 202)
	if _, errs, err = cli("hosts", "web-5", "--maintenance", "on"); err != nil || !strings.Contains(errs, "no worker of host web-5 is known") {
		t.Fatalf("maintenance on for a host no worker served: %v %q", err, errs)
	}
}
