package config

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a log sink tests can read while the watcher writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newTestWatcher(t *testing.T, path string, environ []string, overrides map[string]any) (*Watcher, *syncBuffer) {
	t.Helper()
	var logs syncBuffer
	w, err := NewWatcher(path, environ, overrides, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return w, &logs
}

func rewrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestNewWatcherRefusesInvalidConfig(t *testing.T) {
	p := writeFile(t, "c.yaml", "log:\n  format: xml\n")
	if _, err := NewWatcher(p, nil, nil, nil); err == nil || !strings.Contains(err.Error(), "log.format") {
		t.Fatalf("NewWatcher = %v, want an error naming log.format", err)
	}
	if _, err := NewWatcher(writeFile(t, "c.yaml", "lisen: x\n"), nil, nil, nil); err == nil {
		t.Fatal("NewWatcher accepted an unknown key")
	}
}

func TestReloadAppliesValidFileAndNotifies(t *testing.T) {
	p := writeFile(t, "c.yaml", "log:\n  level: info\n")
	w, _ := newTestWatcher(t, p, nil, nil)
	var got []Config
	w.Subscribe(func(c Config) { got = append(got, c) })

	rewrite(t, p, "log:\n  level: debug\n")
	changed, err := w.Reload()
	if err != nil || !changed {
		t.Fatalf("Reload = %v, %v; want changed", changed, err)
	}
	if w.Current().Log.Level != "debug" {
		t.Errorf("Current().Log.Level = %q", w.Current().Log.Level)
	}
	if len(got) != 1 || got[0].Log.Level != "debug" {
		t.Errorf("subscriber got %v", got)
	}

	// Same content with a comment: nothing to rebuild, no notification.
	rewrite(t, p, "# just a comment\nlog:\n  level: debug\n")
	changed, err = w.Reload()
	if err != nil || changed {
		t.Fatalf("Reload = %v, %v; want unchanged", changed, err)
	}
	if len(got) != 1 {
		t.Errorf("subscriber called for an unchanged config: %d calls", len(got))
	}
	if st := w.Status(); st.SHA256Loaded != hashBytes([]byte("# just a comment\nlog:\n  level: debug\n")) {
		t.Errorf("a comment-only reload did not record the new hash: %+v", st)
	}
}

func TestReloadInvalidFileKeepsRunningConfig(t *testing.T) {
	p := writeFile(t, "c.yaml", "listen: \"127.0.0.1:9000\"\n")
	w, _ := newTestWatcher(t, p, nil, nil)
	before := w.Current()
	sha := w.Status().SHA256Loaded
	called := false
	w.Subscribe(func(Config) { called = true })

	for _, bad := range []struct{ name, content, want string }{
		{"invalid value", "listen: \"127.0.0.1:9001\"\nworker:\n  allow: ['(']\n", "worker.allow[0]"},
		{"unknown key", "listen: \"127.0.0.1:9001\"\nworkr: {}\n", "workr"},
		{"syntax", "listen: [\n", "parse"},
	} {
		t.Run(bad.name, func(t *testing.T) {
			rewrite(t, p, bad.content)
			changed, err := w.Reload()
			if err == nil || changed {
				t.Fatalf("Reload = %v, %v; want refused", changed, err)
			}
			if !strings.Contains(err.Error(), bad.want) || !strings.Contains(err.Error(), "still serving") {
				t.Errorf("error %q does not say why (%s) and that the old config stays", err, bad.want)
			}
			if !reflect.DeepEqual(w.Current(), before) {
				t.Errorf("running config changed after a refused reload: %v", Changed(before, w.Current()))
			}
			st := w.Status()
			if st.SHA256Loaded != sha || st.LastReloadError == "" || st.LastReload.IsZero() {
				t.Errorf("Status after refused reload = %+v", st)
			}
			if drift, _ := w.Check(); !drift {
				t.Error("the refused file on disk is not reported as drift")
			}
			if st := w.Status(); st.PendingError == "" {
				t.Errorf("Status does not say the file on disk would be refused: %+v", st)
			}
		})
	}
	if called {
		t.Error("subscriber called for a refused reload")
	}

	rewrite(t, p, "listen: \"127.0.0.1:9002\"\n")
	if _, err := w.Reload(); err != nil {
		t.Fatal(err)
	}
	if st := w.Status(); st.LastReloadError != "" || st.Drift {
		t.Errorf("a good reload did not clear the error and drift: %+v", st)
	}
}

func TestDriftDetectedAndClearedByReload(t *testing.T) {
	p := writeFile(t, "c.yaml", "log:\n  level: info\n")
	w, logs := newTestWatcher(t, p, nil, nil)
	if drift, _ := w.Check(); drift {
		t.Fatal("drift reported for an untouched file")
	}

	rewrite(t, p, "log:\n  level: debug\n")
	drift, reason := w.Check()
	if !drift || !strings.Contains(reason, "changed on disk") {
		t.Fatalf("Check = %v, %q; want drift", drift, reason)
	}
	if d, r := w.Drift(); !d || r != reason {
		t.Errorf("Drift = %v, %q; want the last check's result", d, r)
	}
	st := w.Status()
	if !st.Drift || st.SHA256OnDisk == st.SHA256Loaded || st.SHA256OnDisk != hashBytes([]byte("log:\n  level: debug\n")) {
		t.Errorf("Status = %+v", st)
	}
	if w.Current().Log.Level != "info" {
		t.Error("drift changed the running config before a reload")
	}
	if !strings.Contains(logs.String(), "config drift") {
		t.Errorf("drift not logged: %s", logs)
	}

	if _, err := w.Reload(); err != nil {
		t.Fatal(err)
	}
	if d, _ := w.Drift(); d {
		t.Error("drift still reported after reload")
	}
	if d, _ := w.Check(); d {
		t.Error("Check reports drift after reload")
	}
	if w.Current().Log.Level != "debug" {
		t.Error("reload did not apply the file")
	}
}

func TestDriftClearedWhenFileRestored(t *testing.T) {
	orig := "log:\n  level: info\n"
	p := writeFile(t, "c.yaml", orig)
	w, _ := newTestWatcher(t, p, nil, nil)
	rewrite(t, p, "log:\n  level: debug\n")
	if d, _ := w.Check(); !d {
		t.Fatal("no drift after edit")
	}
	rewrite(t, p, orig)
	if d, _ := w.Check(); d {
		t.Fatal("drift still reported after restoring the file")
	}
}

func TestDriftWhenFileRemoved(t *testing.T) {
	p := writeFile(t, "c.yaml", "log:\n  level: info\n")
	w, _ := newTestWatcher(t, p, nil, nil)
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	drift, reason := w.Check()
	if !drift || !strings.Contains(reason, "unreadable") {
		t.Fatalf("Check = %v, %q", drift, reason)
	}
	if _, err := w.Reload(); err == nil {
		t.Fatal("reload of a missing file succeeded")
	}
	if w.Current().Log.Level != "info" {
		t.Error("running config lost")
	}
}

func TestRunReportsDrift(t *testing.T) {
	p := writeFile(t, "c.yaml", "config_check_interval: 10ms\n")
	w, _ := newTestWatcher(t, p, nil, nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	rewrite(t, p, "config_check_interval: 20ms\n")
	deadline := time.After(5 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for drift := false; !drift; drift, _ = w.Drift() {
		select {
		case <-deadline:
			t.Fatal("Run did not report drift within 5s")
		case <-tick.C:
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil on cancel", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop on cancel")
	}
}

func TestRunWithoutFileWaitsForCancel(t *testing.T) {
	w, _ := newTestWatcher(t, "", nil, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := w.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if d, _ := w.Check(); d {
		t.Error("drift without a file")
	}
}

func TestOverridesAndEnvSurviveReload(t *testing.T) {
	p := writeFile(t, "c.yaml", "listen: \"127.0.0.1:9000\"\nnats:\n  url: nats://file\n")
	environ := []string{"ORDERLY_NATS__URL=nats://env"}
	overrides := map[string]any{"listen": "127.0.0.1:7000"}
	w, _ := newTestWatcher(t, p, environ, overrides)
	overrides["listen"] = "caller mutated its map" // must not leak into the watcher
	environ[0] = "ORDERLY_NATS__URL=nats://mutated"

	rewrite(t, p, "listen: \"127.0.0.1:9001\"\nnats:\n  url: nats://file2\nlog:\n  level: debug\n")
	if _, err := w.Reload(); err != nil {
		t.Fatal(err)
	}
	c := w.Current()
	if c.Listen != "127.0.0.1:7000" || c.NATS.URL != "nats://env" || c.Log.Level != "debug" {
		t.Errorf("after reload listen=%q nats.url=%q log.level=%q; want flag, env and new file", c.Listen, c.NATS.URL, c.Log.Level)
	}
	if w.Loaded().Overrides["listen"] != "127.0.0.1:7000" {
		t.Errorf("Loaded().Overrides = %v", w.Loaded().Overrides)
	}
}

func TestCurrentIsSafeDuringReload(t *testing.T) {
	p := writeFile(t, "c.yaml", "limits:\n  max_args: 1\n")
	w, _ := newTestWatcher(t, p, nil, nil)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			if n := w.Current().Limits.MaxArgs; n < 1 || n > 20 {
				t.Errorf("torn read: max_args=%d", n)
				return
			}
		}
	})
	for i := 2; i <= 20; i++ {
		rewrite(t, p, "limits:\n  max_args: "+strconv.Itoa(i)+"\n")
		if _, err := w.Reload(); err != nil {
			t.Error(err)
		}
		w.Check()
	}
	cancel()
	wg.Wait()
}

func TestChanged(t *testing.T) {
	a := Default()
	b := Default()
	b.NATS.URL = "nats://x"
	b.Policy = []Rule{{Name: "r"}}
	b.ACL.Allow = []string{} // empty equals nil
	got := Changed(a, b)
	if !reflect.DeepEqual(got, []string{"nats.url", "policy"}) {
		t.Errorf("Changed = %v", got)
	}
	if !RequiresRestart("nats.url") || !RequiresRestart("listen") || RequiresRestart("policy") ||
		!RequiresRestart("worker.shutdown_grace") || !RequiresRestart("worker.metrics_listen") || RequiresRestart("worker.kill_grace") {
		t.Error("RequiresRestart misclassifies keys")
	}
	// The NATS TLS files are options of the connection, made once: a
	// reload that changes them lists them (the files themselves are read
	// again at each reconnect).
	b = Default()
	b.NATS.TLSCA, b.NATS.TLSCert, b.NATS.TLSKey = "/etc/orderly/ca.crt", "/etc/orderly/c.crt", "/etc/orderly/c.key"
	got = Changed(a, b)
	if !reflect.DeepEqual(got, []string{"nats.tls_ca", "nats.tls_cert", "nats.tls_key"}) {
		t.Errorf("Changed = %v", got)
	}
	for _, k := range got {
		if !RequiresRestart(k) {
			t.Errorf("RequiresRestart(%q) = false: a reload would not say that it waits for a restart", k)
		}
	}
}
