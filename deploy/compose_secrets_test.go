package deploy

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestComposeSecretsAreNATSAuths: secrets.sh writes compose's NATS seeds
// and auth.conf with `orderly nats-auth` (one template of the accounts,
// the one serve runs), and a real nats-server given that auth.conf lets
// each worker's mounted seed do its job (bind the hosts bucket the API's
// seed made, write its lease key) and refuses a client without one. Run
// again, it keeps every seed and writes the same file; `secrets.sh
// --rotate web-2` gives web-2 a new mounted seed and a file accepting
// its old key and its new one. Before, secrets.sh filled its own copy of
// deploy/nats/auth.conf with `nk`'s keys and took no arguments.
func TestComposeSecretsAreNATSAuths(t *testing.T) {
	secrets := makeSecrets(t)
	conf := filepath.Join(secrets, "auth.conf")
	text, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(text), "# orderly's NATS accounts, written by `orderly nats-auth`") {
		t.Fatalf("secrets/auth.conf is not orderly nats-auth's:\n%.300s", text)
	}
	seeds := map[string][]byte{}
	for _, name := range []string{"api.nk", "submitter.nk", "worker-web-1.nk", "worker-web-2.nk", "operator.nk"} {
		if seeds[name], err = os.ReadFile(filepath.Join(secrets, name)); err != nil {
			t.Fatalf("%s, which docker-compose.yaml or an operator mounts: %v", name, err)
		}
	}

	url := serveAuthConf(t, conf)
	if nc, err := nats.Connect(url, nats.NoReconnect()); err == nil {
		nc.Close()
		t.Fatal("a client without a seed connected: the auth.conf is not in force")
	}
	api := connectSeed(t, url, filepath.Join(secrets, "api.nk"), queue.APIInbox)
	for _, host := range []string{"web-1", "web-2"} {
		workerJob(t, api, connectSeed(t, url, filepath.Join(secrets, "worker-"+host+".nk"), queue.WorkerInbox(host)), host)
	}

	// Again: nothing changes.
	runSecrets(t, secrets)
	for name, b := range seeds {
		if now, err := os.ReadFile(filepath.Join(secrets, name)); err != nil || !bytes.Equal(now, b) {
			t.Fatalf("a second run changed %s (%v)", name, err)
		}
	}
	if now, err := os.ReadFile(conf); err != nil || !bytes.Equal(now, text) {
		t.Fatalf("a second run changed auth.conf (%v)", err)
	}

	// web-2 re-keyed: its mounted seed is the new one, and a server given
	// the new file takes the old seed and the new.
	oldSeed := filepath.Join(t.TempDir(), "worker-web-2.nk")
	if err := os.WriteFile(oldSeed, seeds["worker-web-2.nk"], 0o600); err != nil {
		t.Fatal(err)
	}
	if out := runSecrets(t, secrets, "--rotate", "web-2"); !strings.Contains(out, "--retire-old web-2") {
		t.Fatalf("secrets.sh --rotate web-2 did not say how the rotation ends: %s", out)
	}
	if now, err := os.ReadFile(filepath.Join(secrets, "worker-web-2.nk")); err != nil || bytes.Equal(now, seeds["worker-web-2.nk"]) {
		t.Fatalf("secrets.sh --rotate web-2 left the seed compose mounts as it was (%v)", err)
	}
	url = serveAuthConf(t, conf)
	api = connectSeed(t, url, filepath.Join(secrets, "api.nk"), queue.APIInbox)
	workerJob(t, api, connectSeed(t, url, oldSeed, queue.WorkerInbox("web-2")), "web-2")
	workerJob(t, api, connectSeed(t, url, filepath.Join(secrets, "worker-web-2.nk"), queue.WorkerInbox("web-2")), "web-2")

	runSecrets(t, secrets, "--retire-old", "web-2")
	url = serveAuthConf(t, conf)
	nk, err := nats.NkeyOptionFromSeed(oldSeed)
	if err != nil {
		t.Fatal(err)
	}
	if nc, err := nats.Connect(url, nk, nats.NoReconnect()); !errors.Is(err, nats.ErrAuthorization) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("web-2's retired seed connecting: %v, want an authorization violation", err)
	}
}

// serveAuthConf starts a nats-server (JetStream on) whose accounts are
// the file conf, as deploy/nats/nats-*.conf include it, and returns its
// URL.
func serveAuthConf(t *testing.T, conf string) string {
	t.Helper()
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("nats-server refuses %s: %v", conf, err)
	}
	return testenv.NATSServer(t, opts).ClientURL()
}

// connectSeed connects to url as the holder of the seed file, with the
// inbox prefix of its role (its permissions allow no other).
func connectSeed(t *testing.T, url, seed, inbox string) *nats.Conn {
	t.Helper()
	nk, err := nats.NkeyOptionFromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, nk, nats.CustomInboxPrefix(inbox), nats.NoReconnect())
	if err != nil {
		t.Fatalf("%s connecting: %v", seed, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// workerJob: the worker of host, on w, binds the hosts bucket the API
// (on api) made and writes its lease key, as its start does, through its
// account's imports of orderly's JetStream.
func workerJob(t *testing.T, api, w *nats.Conn, host string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	ajs, err := jetstream.New(api)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ajs.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: queue.HostsBucket}); err != nil {
		t.Fatalf("the API's seed cannot make the hosts bucket: %v", err)
	}
	wjs, err := jetstream.New(w, jetstream.WithDefaultTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := wjs.KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatalf("the worker seed of %s cannot bind the hosts bucket: %v", host, err)
	}
	if _, err := kv.Put(ctx, "lease."+host, []byte("test")); err != nil {
		t.Fatalf("the worker seed of %s cannot write its lease key: %v", host, err)
	}
}

// TestComposeSecretsKeepTheSeedsOfAnEarlierRun: a secrets/ that the
// secrets.sh of before nats-auth made (bare `nk -gen user` seeds, mode
// 0644, the operator's as sys.nk) keeps its keys: the containers and
// hosts holding those seeds stay accepted by the auth.conf written now.
func TestComposeSecretsKeepTheSeedsOfAnEarlierRun(t *testing.T) {
	secrets := makeSecrets(t)
	if err := os.RemoveAll(filepath.Join(secrets, "nats")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(secrets, "operator.nk")); err != nil {
		t.Fatal(err)
	}
	pubs := map[string]string{}
	for _, name := range []string{"api.nk", "submitter.nk", "worker-web-1.nk", "worker-web-2.nk", "sys.nk"} {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		seed, _ := kp.Seed()
		pubs[name], _ = kp.PublicKey()
		if err := os.WriteFile(filepath.Join(secrets, name), append(seed, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	runSecrets(t, secrets)
	conf, err := os.ReadFile(filepath.Join(secrets, "auth.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for name, pub := range pubs {
		if !strings.Contains(string(conf), "nkey: "+pub) {
			t.Errorf("auth.conf does not accept the key of the earlier %s", name)
		}
		if name == "sys.nk" {
			name = "operator.nk"
		}
		b, err := os.ReadFile(filepath.Join(secrets, name))
		if err != nil {
			t.Fatal(err)
		}
		kp, err := nkeys.ParseDecoratedNKey(b)
		if err != nil {
			t.Fatal(err)
		}
		if now, _ := kp.PublicKey(); now != pub {
			t.Errorf("%s holds key %s, want the earlier %s", name, now, pub)
		}
	}
	if _, err := os.Stat(filepath.Join(secrets, "sys.nk")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("sys.nk is still there beside operator.nk: %v", err)
	}
	url := serveAuthConf(t, filepath.Join(secrets, "auth.conf"))
	workerJob(t, connectSeed(t, url, filepath.Join(secrets, "api.nk"), queue.APIInbox),
		connectSeed(t, url, filepath.Join(secrets, "worker-web-1.nk"), queue.WorkerInbox("web-1")), "web-1")
}
