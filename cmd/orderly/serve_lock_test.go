package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSecondServeOnSameDataDir: a second serve on the same data dir (a
// second `make run`) refuses to start, and leaves the first one — its
// PostgreSQL included — running.
func TestSecondServeOnSameDataDir(t *testing.T) {
	dataDir := serveDataDir(t, "orderly-serve-")
	p := startServe(t, dataDir)

	second := exec.Command(orderlyBin, "serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--host", "srv")
	second.Env = []string{"ORDERLY_NATS__LISTEN=127.0.0.1:0", "PATH=/usr/bin:/bin", "HOME=" + dataDir}
	done := make(chan error, 1)
	var out strings.Builder
	second.Stdout, second.Stderr = &out, &out
	if err := second.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- second.Wait() }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(out.String(), "another orderly serve is running") {
			t.Fatalf("second serve: %v\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		_ = second.Process.Kill()
		t.Fatal("the second serve did not refuse to start")
	}

	tok, err := os.ReadFile(dataDir + "/admin.token")
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", p.url+"/v1/orders?wait=10",
		strings.NewReader(`{"host":"srv","command":"true"}`))
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the first serve no longer runs orders: %d", resp.StatusCode)
	}
}

// TestServeNATSSyncsEveryWrite: serve's embedded nats-server fsyncs every
// JetStream write (DESIGN §2.4): a PubAck, and so a 202, means the order
// is on disk. (natsembed's tests check that the option reaches the
// running server.)
func TestServeNATSSyncsEveryWrite(t *testing.T) {
	if o := embeddedNATS(t.TempDir(), "127.0.0.1", -1, nil, nil); !o.SyncAlways {
		t.Fatalf("serve's nats-server options: %+v", o)
	}
}

// TestServeFindsATakenPortFirst: a serve whose API port, or whose
// embedded NATS's, is taken says so before it starts anything. The API's
// port was found taken when the API started, after PostgreSQL (an initdb
// on a first start), NATS and the worker, which could take an order of its
// host only to be stopped under it. What serve opened for the check is
// closed on the way out.
func TestServeFindsATakenPortFirst(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freeAddr := free.Addr().String()
	free.Close()
	for _, c := range []struct {
		listen, natsListen, says string
	}{
		{taken.Addr().String(), "127.0.0.1:0", "listen on " + taken.Addr().String()},
		// serve has no flag for nats.listen: the message names the variable.
		{freeAddr, taken.Addr().String(), taken.Addr().String() + " is in use: is another orderly serve running? set nats.listen (ORDERLY_NATS__LISTEN=127.0.0.1:4223, or nats.listen in the --config file)"},
	} {
		dataDir := serveDataDir(t, "orderly-port-")
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		var out bytes.Buffer
		start := time.Now()
		err := run(ctx, []string{"orderly", "serve", "--data-dir", dataDir, "--listen", c.listen, "--host", "srv"},
			[]string{"ORDERLY_NATS__LISTEN=" + c.natsListen}, strings.NewReader(""), &out, &out)
		cancel()
		if err == nil || !strings.Contains(err.Error(), c.says) {
			t.Fatalf("serve --listen %s, nats.listen %s: %v, want %q\n%s", c.listen, c.natsListen, err, c.says, out.String())
		}
		entries, _ := os.ReadDir(dataDir)
		for _, e := range entries {
			if e.Name() != "serve.lock" {
				t.Errorf("serve --listen %s, nats.listen %s left %s in the data dir (after %s): it started before it found the port taken\n%s",
					c.listen, c.natsListen, e.Name(), time.Since(start).Round(time.Millisecond), out.String())
			}
		}
	}
	// The API's listener, opened before NATS's port was found taken, is
	// closed again.
	ln, err := net.Listen("tcp", freeAddr)
	if err != nil {
		t.Fatalf("the API's port after a refused start: %v", err)
	}
	ln.Close()
}

// TestServeRefusesAConfigAdminTokenFirst: a config token named admin (a
// Vigrid config imported as it is names its first token so) was found
// when serve loaded its own admin token from PostgreSQL, after an initdb,
// NATS and the migrations, and the error said "rename one of them" of two
// tokens one of which cannot be renamed. It is now refused before
// anything starts, naming the config's token.
func TestServeRefusesAConfigAdminTokenFirst(t *testing.T) {
	dataDir := serveDataDir(t, "orderly-admin-name-")
	cfgFile := filepath.Join(t.TempDir(), "orderly.yaml")
	if err := os.WriteFile(cfgFile, []byte("auth:\n  tokens:\n    - name: ops\n      sha256: "+strings.Repeat("ab", 32)+
		"\n    - name: admin\n      sha256: "+strings.Repeat("cd", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var out bytes.Buffer
	err := run(ctx, []string{"orderly", "serve", "--config", cfgFile, "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--host", "srv"},
		[]string{"ORDERLY_NATS__LISTEN=127.0.0.1:0"}, strings.NewReader(""), &out, &out)
	if err == nil || !strings.Contains(err.Error(), "auth.tokens[1]") || !strings.Contains(err.Error(), "rename this token") {
		t.Fatalf("serve with a config token named admin: %v, want auth.tokens[1] named\n%s", err, out.String())
	}
	if entries, _ := os.ReadDir(dataDir); len(entries) != 0 {
		t.Errorf("serve started something before refusing the token: %v", entries)
	}
}

// TestServeRefusesADataDirOthersControl: serve takes the admin.token and
// NATS seeds it finds in its data dir. In one another user owns (./data
// under /tmp, made before serve first ran there) or may write to (a umask
// of 000, a chmod 777), that user planted a token of their choosing, mode
// 0600, and serve made it admin's. Such a data dir is refused before
// anything starts, and nothing is written in it.
func TestServeRefusesADataDirOthersControl(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a directory to another user")
	}
	const planted = "ord_plantedplantedplantedplanted"
	for _, c := range []struct {
		name  string
		mode  os.FileMode
		owner int
		says  string
	}{
		{"another user's", 0o755, 65534, "owned by uid 65534"},
		{"world-writable", 0o777, 0, "may be written by other users (mode 777)"},
		{"group-writable", 0o775, 0, "may be written by other users (mode 775)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dataDir := serveDataDir(t, "orderly-owner-")
			if err := os.WriteFile(filepath.Join(dataDir, "admin.token"), []byte(planted+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(dataDir, c.owner, c.owner); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dataDir, c.mode); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			var out bytes.Buffer
			err := run(ctx, []string{"orderly", "serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--host", "srv"},
				[]string{"ORDERLY_NATS__LISTEN=127.0.0.1:0"}, strings.NewReader(""), &out, &out)
			if err == nil || !strings.Contains(err.Error(), c.says) {
				t.Fatalf("serve on a data dir %s: %v, want %q\n%s", c.name, err, c.says, out.String())
			}
			if entries, _ := os.ReadDir(dataDir); len(entries) != 1 {
				t.Errorf("serve started something before refusing the data dir: %v", entries)
			}
		})
	}
	// serve's own data dir, 0755 as MkdirAll makes it, passes.
	if err := dataDirOwn(serveDataDir(t, "orderly-owner-own-")); err != nil {
		t.Fatalf("serve's own 0755 data dir: %v", err)
	}
}
