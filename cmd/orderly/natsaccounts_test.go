package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-run/orderly/internal/queue"
)

// natsAuthRun runs the built binary's `orderly nats-auth` with args and
// returns its exit status and streams.
func natsAuthRun(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(orderlyBin, append([]string{"nats-auth"}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

// TestNATSAuthFileIsWhatNATSServerEnforces: the seeds and the accounts
// file `orderly nats-auth` writes, included by a real nats-server as
// deploy/nats/nats-*.conf include auth.conf, let web-2's seed do a
// worker's job (take its control subject, which the API's seed
// publishes to it, and reach JetStream's API) and refuse it web-1's
// control subject, and the operator's seed is the system account's.
// A second run with one more host keeps every seed's
// bytes; a run without web-2 keeps its file, says so, and the server
// given that file refuses web-2's seed.
func TestNATSAuthFileIsWhatNATSServerEnforces(t *testing.T) {
	dir := t.TempDir()
	creds := filepath.Join(dir, "creds")
	conf := filepath.Join(dir, "auth.conf")
	if code, _, stderr := natsAuthRun(t, "--creds-dir", creds, "--workers", "web-1,web-2", "--out", conf); code != 0 {
		t.Fatalf("nats-auth: exit %d: %s", code, stderr)
	}
	seeds := map[string][]byte{}
	for _, name := range []string{"api.nk", "submitter.nk", "worker-web-1.nk", "worker-web-2.nk", "operator.nk"} {
		st, err := os.Stat(filepath.Join(creds, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Fatalf("%s has mode %v, want 0600", name, st.Mode().Perm())
		}
		seeds[name], _ = os.ReadFile(filepath.Join(creds, name))
	}

	n := newNATSServer(t, dir, "include \"auth.conf\"\n")
	n.start()
	if nc, err := nats.Connect(n.url(), nats.NoReconnect()); err == nil {
		nc.Close()
		t.Fatal("a client without a seed connected: the accounts file is not in force")
	}
	w2 := dialBus(t, n.url(), filepath.Join(creds, "worker-web-2.nk"), queue.WorkerInbox("web-2"))
	got := make(chan *nats.Msg, 1)
	if _, err := w2.nc.ChanSubscribe(queue.ControlSubject+"web-2", got); err != nil {
		t.Fatal(err)
	}
	if err := w2.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	api := dialBus(t, n.url(), filepath.Join(creds, "api.nk"), queue.APIInbox)
	if err := api.nc.Publish(queue.ControlSubject+"web-2", []byte("wake")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if string(m.Data) != "wake" {
			t.Fatalf("web-2 got %q on its control subject", m.Data)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("web-2's worker seed did not receive the API's message on its control subject")
	}
	workerUsesJetStream(t, api, w2, "web-2")
	if _, err := w2.nc.SubscribeSync(queue.ControlSubject + "web-1"); err != nil {
		t.Fatal(err)
	}
	_ = w2.nc.Flush()
	w2.waitViolation(t, `Subscription to "`+queue.ControlSubject+`web-1"`)
	// The operator's seed is in the system account, whose requests
	// (nats server report) the server answers; another account's
	// request has no responder.
	op := dialBus(t, n.url(), filepath.Join(creds, "operator.nk"), "_INBOX")
	if _, err := op.nc.Request("$SYS.REQ.SERVER.PING", nil, 10*time.Second); err != nil {
		t.Fatalf("the operator's seed gets no answer from the system account: %v", err)
	}

	// One more host: its seed is made, no other seed is touched.
	code, _, stderr := natsAuthRun(t, "--creds-dir", creds, "--workers", "web-1,web-2,web-3", "--out", conf)
	if code != 0 {
		t.Fatalf("nats-auth with web-3: exit %d: %s", code, stderr)
	}
	for name, b := range seeds {
		now, err := os.ReadFile(filepath.Join(creds, name))
		if err != nil || !bytes.Equal(now, b) {
			t.Fatalf("a second run changed %s (%v)", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(creds, "worker-web-3.nk")); err != nil {
		t.Fatal(err)
	}

	// web-2 left out: its seed stays, its account goes, stderr says so.
	code, _, stderr = natsAuthRun(t, "--creds-dir", creds, "--workers", "web-1,web-3", "--out", conf)
	if code != 0 {
		t.Fatalf("nats-auth without web-2: exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "web-2") || !strings.Contains(stderr, "worker-web-2.nk") {
		t.Fatalf("nats-auth without web-2 did not say it keeps web-2's seed out of the config: %q", stderr)
	}
	if now, err := os.ReadFile(filepath.Join(creds, "worker-web-2.nk")); err != nil || !bytes.Equal(now, seeds["worker-web-2.nk"]) {
		t.Fatalf("the seed of the host left out was changed or removed: %v", err)
	}
	dir2 := t.TempDir()
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir2, "auth.conf"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	n2 := newNATSServer(t, dir2, "include \"auth.conf\"\n")
	n2.start()
	nk, err := nats.NkeyOptionFromSeed(filepath.Join(creds, "worker-web-2.nk"))
	if err != nil {
		t.Fatal(err)
	}
	if nc, err := nats.Connect(n2.url(), nk, nats.NoReconnect()); !errors.Is(err, nats.ErrAuthorization) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("web-2's seed, left out of the file, connecting: %v, want an authorization violation", err)
	}
	w3 := dialBus(t, n2.url(), filepath.Join(creds, "worker-web-3.nk"), queue.WorkerInbox("web-3"))
	workerUsesJetStream(t, dialBus(t, n2.url(), filepath.Join(creds, "api.nk"), queue.APIInbox), w3, "web-3")
}

// TestNATSAuthRefusesABadHost: a host id the worker would refuse (not
// one NATS subject token) is refused before anything is written, with
// the rule, as the CLI's other usage errors (exit 1, the usage line).
func TestNATSAuthRefusesABadHost(t *testing.T) {
	for _, host := range []string{"web 3", "web.3", "web-*", "web->", ""} {
		t.Run(host, func(t *testing.T) {
			creds := filepath.Join(t.TempDir(), "creds")
			code, stdout, stderr := natsAuthRun(t, "--creds-dir", creds, "--workers", "web-1,"+host)
			if code != 1 || !strings.Contains(stderr, "[A-Za-z0-9_-]") || !strings.Contains(stderr, "usage: orderly nats-auth") || stdout != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q: want exit 1 naming the rule and the usage", code, stdout, stderr)
			}
			if _, err := os.Stat(creds); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("the credentials dir was made for a refused run: %v", err)
			}
		})
	}
}

// TestNATSAuthLeavesAnOpenDirectoryAsItIs: a --creds-dir that exists
// and others may enter (/etc/orderly, whose configs the API reads
// through its group) is refused with what to do, its mode and contents
// as they were, and no seed written in it. It was made mode 0700 (the
// seeds' writer chmods the directory it is given), which closed it to
// every other user: the API could no longer read its config. A
// directory of the seeds' own, 0700 as nats-auth makes it, is used.
func TestNATSAuthLeavesAnOpenDirectoryAsItIs(t *testing.T) {
	etc := filepath.Join(t.TempDir(), "etc-orderly")
	if err := os.Mkdir(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(etc, 0o755); err != nil { // whatever the umask
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(etc, "api.yaml"), []byte("listen: :8080\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := natsAuthRun(t, "--creds-dir", etc, "--workers", "web-1")
	if code != 1 || !strings.Contains(stderr, "chmod 700") || !strings.Contains(stderr, "usage: orderly nats-auth") || stdout != "" {
		t.Fatalf("exit %d, %d bytes on stdout, stderr %q: want exit 1 saying what to do, with the usage, and nothing written", code, len(stdout), stderr)
	}
	st, err := os.Stat(etc)
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("the directory after the refused run: %v, %v; want mode 0755 as it was", st.Mode(), err)
	}
	entries, err := os.ReadDir(etc)
	if err != nil || len(entries) != 1 {
		t.Fatalf("the directory holds %v (%v): want api.yaml alone, no seed", entries, err)
	}

	// Its own directory, made by the first run, is used again.
	own := filepath.Join(t.TempDir(), "creds")
	for range 2 {
		if code, _, stderr := natsAuthRun(t, "--creds-dir", own, "--workers", "web-1"); code != 0 {
			t.Fatalf("nats-auth on its own directory: exit %d: %s", code, stderr)
		}
	}
	if st, err := os.Stat(own); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("its own directory: %v, %v; want mode 0700", st.Mode(), err)
	}
}

// workerUsesJetStream: the worker of host, on w, reaches orderly's
// JetStream through its account's service imports, as its start does:
// it binds the hosts bucket the API made (a stream info request) and
// writes its lease key, each answered through the import.
func workerUsesJetStream(t *testing.T, api, w *busClient, host string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	ajs, err := jetstream.New(api.nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ajs.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: queue.HostsBucket}); err != nil {
		t.Fatalf("the API's seed cannot make the hosts bucket: %v", err)
	}
	wjs, err := jetstream.New(w.nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := wjs.KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatalf("the worker seed of %s cannot bind the hosts bucket (JetStream's stream info): %v", host, err)
	}
	if _, err := kv.Put(ctx, "lease."+host, []byte("test")); err != nil {
		t.Fatalf("the worker seed of %s cannot write its lease key: %v", host, err)
	}
}

// waitViolation waits for the server's permission violation containing
// want.
func (c *busClient) waitViolation(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		for _, v := range c.violations {
			if strings.Contains(v, want) {
				c.mu.Unlock()
				return
			}
		}
		c.mu.Unlock()
		select {
		case <-c.changed:
		case <-deadline:
			t.Fatalf("no permission violation for %s; saw %q", want, c.violations)
		}
	}
}

// TestNATSAuthRotatesAWorkerSeedWithoutAGap: `--rotate web-2` gives
// web-2 a new seed and writes a file that accepts its old key too, so a
// real nats-server reloaded with it (SIGHUP) keeps the worker connected
// by the old seed, still doing its job, and lets the new seed in; a run
// between (nothing rotated) keeps the old key; `--retire-old web-2`
// writes the file without it, and the server reloaded with that drops
// the connection of the old seed and refuses it, while the new seed's
// connection stays. Before --rotate the only way was a second user
// block written by hand.
func TestNATSAuthRotatesAWorkerSeedWithoutAGap(t *testing.T) {
	dir := t.TempDir()
	creds := filepath.Join(dir, "creds")
	conf := filepath.Join(dir, "auth.conf")
	run := func(args ...string) string {
		t.Helper()
		code, _, stderr := natsAuthRun(t, append([]string{"--creds-dir", creds, "--workers", "web-1,web-2", "--out", conf}, args...)...)
		if code != 0 {
			t.Fatalf("nats-auth %q: exit %d: %s", args, code, stderr)
		}
		return stderr
	}
	run()
	seedFile := filepath.Join(creds, "worker-web-2.nk")
	oldSeed, err := os.ReadFile(seedFile)
	if err != nil {
		t.Fatal(err)
	}
	// web-2's host holds its own copy of the seed (its nats.nkey): the
	// new one reaches it only when the operator installs it.
	hostSeed := filepath.Join(dir, "web-2-host.nk")
	if err := os.WriteFile(hostSeed, oldSeed, 0o600); err != nil {
		t.Fatal(err)
	}
	others := map[string][]byte{}
	for _, name := range []string{"api.nk", "submitter.nk", "worker-web-1.nk", "operator.nk"} {
		if others[name], err = os.ReadFile(filepath.Join(creds, name)); err != nil {
			t.Fatal(err)
		}
	}

	n := newNATSServer(t, dir, "include \"auth.conf\"\n")
	n.start()
	reload := func() {
		t.Helper()
		off := n.proc.logSize()
		n.proc.signal(syscall.SIGHUP)
		deadline := time.Now().Add(30 * time.Second)
		for !n.proc.loggedSince(off, "Reloaded server configuration") {
			if time.Now().After(deadline) {
				t.Fatalf("nats-server did not reload its configuration; log:\n%s", logTail(n.logPath, 20))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// dropped reports whether c lost its connection, which a reload
	// that no longer accepts its key does at once.
	watch := func(c *busClient) chan error {
		ch := make(chan error, 4)
		c.nc.SetDisconnectErrHandler(func(_ *nats.Conn, err error) { ch <- err })
		return ch
	}
	api := dialBus(t, n.url(), filepath.Join(creds, "api.nk"), queue.APIInbox)
	old := dialBus(t, n.url(), hostSeed, queue.WorkerInbox("web-2"))
	oldDropped := watch(old)
	workerUsesJetStream(t, api, old, "web-2")

	stderr := run("--rotate", "web-2")
	if !strings.Contains(stderr, "--retire-old web-2") {
		t.Fatalf("--rotate did not say how the rotation ends: %q", stderr)
	}
	if now, err := os.ReadFile(seedFile); err != nil || bytes.Equal(now, oldSeed) {
		t.Fatalf("--rotate web-2 left its seed as it was (%v)", err)
	}
	for name, b := range others {
		if now, err := os.ReadFile(filepath.Join(creds, name)); err != nil || !bytes.Equal(now, b) {
			t.Fatalf("--rotate web-2 changed %s (%v)", name, err)
		}
	}
	reload()
	fresh := dialBus(t, n.url(), seedFile, queue.WorkerInbox("web-2"))
	freshDropped := watch(fresh)
	workerUsesJetStream(t, api, fresh, "web-2")
	workerUsesJetStream(t, api, old, "web-2")
	select {
	case err := <-oldDropped:
		t.Fatalf("the worker connected by the old seed was dropped at the reload after --rotate: %v", err)
	default:
	}

	// A run in between, nothing rotated: the old key is still accepted,
	// and stderr says so.
	if stderr := run(); !strings.Contains(stderr, "still accepted") || !strings.Contains(stderr, "--retire-old web-2") {
		t.Fatalf("a run during the rotation did not say the old key is still accepted: %q", stderr)
	}
	reload()
	workerUsesJetStream(t, api, old, "web-2")

	// The worker runs with the new seed now (fresh); the old key retired,
	// the connection still holding it is dropped and cannot come back.
	run("--retire-old", "web-2")
	reload()
	select {
	case <-oldDropped:
	case <-time.After(30 * time.Second):
		t.Fatal("the connection of the retired key was not dropped at the reload")
	}
	nk, err := nats.NkeyOptionFromSeed(hostSeed)
	if err != nil {
		t.Fatal(err)
	}
	if nc, err := nats.Connect(n.url(), nk, nats.NoReconnect()); !errors.Is(err, nats.ErrAuthorization) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("the retired seed connecting: %v, want an authorization violation", err)
	}
	workerUsesJetStream(t, api, fresh, "web-2")
	select {
	case err := <-freshDropped:
		t.Fatalf("the new seed's connection was dropped: %v", err)
	default:
	}
}

// TestNATSAuthRotationRefusals: a rotation of a host not in --workers,
// or of a host whose previous rotation is under way (its old key would
// be dropped while its worker may hold it), is refused with what to do,
// the seed and the accepted keys as they were.
func TestNATSAuthRotationRefusals(t *testing.T) {
	creds := filepath.Join(t.TempDir(), "creds")
	base := []string{"--creds-dir", creds, "--workers", "web-1,web-2"}
	if code, _, stderr := natsAuthRun(t, base...); code != 0 {
		t.Fatalf("nats-auth: exit %d: %s", code, stderr)
	}
	code, _, stderr := natsAuthRun(t, append(base, "--rotate", "web-3")...)
	if code != 1 || !strings.Contains(stderr, `--rotate: host "web-3" is not in --workers`) || !strings.Contains(stderr, "usage: orderly nats-auth") {
		t.Fatalf("--rotate web-3: exit %d, %q; want exit 1 naming the host and the usage", code, stderr)
	}
	if code, _, stderr := natsAuthRun(t, append(base, "--rotate", "web-2")...); code != 0 {
		t.Fatalf("--rotate web-2: exit %d: %s", code, stderr)
	}
	seed, err := os.ReadFile(filepath.Join(creds, "worker-web-2.nk"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(filepath.Join(creds, "worker-web-2.retiring.pub"))
	if err != nil {
		t.Fatal(err)
	}
	code, _, stderr = natsAuthRun(t, append(base, "--rotate", "web-2")...)
	if code != 1 || !strings.Contains(stderr, "under way") || !strings.Contains(stderr, "--retire-old web-2") {
		t.Fatalf("a second --rotate web-2: exit %d, %q; want exit 1 saying to retire the old key first", code, stderr)
	}
	if now, err := os.ReadFile(filepath.Join(creds, "worker-web-2.nk")); err != nil || !bytes.Equal(now, seed) {
		t.Fatalf("the refused rotation changed the seed (%v)", err)
	}
	if now, err := os.ReadFile(filepath.Join(creds, "worker-web-2.retiring.pub")); err != nil || !bytes.Equal(now, pub) {
		t.Fatalf("the refused rotation changed the old key (%v)", err)
	}
	code, _, stderr = natsAuthRun(t, append(base, "--rotate", "web-2", "--retire-old", "web-2")...)
	if code != 1 || !strings.Contains(stderr, "both name host") {
		t.Fatalf("--rotate and --retire-old of one host: exit %d, %q; want exit 1", code, stderr)
	}
}
