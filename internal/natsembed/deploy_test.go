package natsembed

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderly-run/orderly/internal/queue"
)

// TestDeployNATSConfigs loads deploy/nats/*.conf with nats-server's own
// config parser, so a typo fails the tests, and checks that they spell
// the permission model of this package: every orderly user is exactly
// the API, a submitter or the worker of one host, and each role is there.
func TestDeployNATSConfigs(t *testing.T) {
	files, err := filepath.Glob("../../deploy/nats/nats-*.conf")
	if err != nil || len(files) != 3 {
		t.Fatalf("want 3 node configs, got %v %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			opts, err := server.ProcessConfigFile(f)
			if err != nil {
				t.Fatal(err)
			}
			name := strings.TrimSuffix(filepath.Base(f), ".conf")
			if opts.ServerName != name || !opts.JetStream || !opts.SyncAlways {
				t.Fatalf("server_name %q jetstream %v sync always %v", opts.ServerName, opts.JetStream, opts.SyncAlways)
			}
			if opts.JetStreamLimits.DefaultMaxConsumers != -1 {
				t.Fatalf("default_max_consumers %d: nats-server caps a stream's consumers (one per host on the orders stream) at 1,000 unless it is -1",
					opts.JetStreamLimits.DefaultMaxConsumers)
			}
			if opts.Cluster.Name != "orderly" || len(opts.Routes) != 3 {
				t.Fatalf("cluster %q with %d routes", opts.Cluster.Name, len(opts.Routes))
			}
			if opts.SystemAccount != "SYS" {
				t.Fatalf("system account %q", opts.SystemAccount)
			}
			roles := map[string]int{}
			for _, u := range opts.Nkeys {
				if u.Account == nil {
					t.Fatalf("user %s has no account", u.Nkey)
				}
				if u.Account.Name == "SYS" {
					continue
				}
				role := roleOf(u.Permissions)
				if role == "" {
					t.Fatalf("user %s has permissions of no orderly role: %+v %+v", u.Nkey, u.Permissions.Publish, u.Permissions.Subscribe)
				}
				// Each role in its account: a worker in one with the
				// orderly's JetStream could name any subject of it as a
				// reply subject (accounts.go).
				want := map[string]string{"api": OrderlyAccount, "submitter": SubmitterAccount}[role]
				if host, ok := strings.CutPrefix(role, "worker:"); ok {
					want = WorkerAccount(host)
				}
				if u.Account.Name != want {
					t.Fatalf("user %s (%s) in account %s, want %s", u.Nkey, role, u.Account.Name, want)
				}
				roles[strings.SplitN(role, ":", 2)[0]]++
			}
			if roles["api"] == 0 || roles["submitter"] == 0 || roles["worker"] < 2 {
				t.Fatalf("roles %v: want the API, a submitter and two example workers", roles)
			}
		})
	}
}

// TestDeployAuthConfIsTheLayout: deploy/nats/auth.conf, below its
// comments, is the layout serve's embedded NATS runs (accounts.go) with
// its example keys, so that its imports and exports cannot drift from
// what the worker's code sends. On a change of the layout, write the
// new text there (ExampleLayout().Config()).
func TestDeployAuthConfIsTheLayout(t *testing.T) {
	b, err := os.ReadFile("../../deploy/nats/auth.conf")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for strings.HasPrefix(text, "#") || strings.HasPrefix(text, "\n") {
		_, text, _ = strings.Cut(text, "\n")
	}
	want := ExampleLayout().Config()
	if text != want {
		out := filepath.Join(t.TempDir(), "auth.conf")
		_ = os.WriteFile(out, []byte(want), 0o644)
		t.Fatalf("deploy/nats/auth.conf below its comments is not ExampleLayout's config; the wanted text is in %s", out)
	}
}

// roleOf names the role whose permissions p are exactly, or "".
func roleOf(p *server.Permissions) string {
	if p == nil || p.Publish == nil || p.Subscribe == nil {
		return ""
	}
	if samePermissions(p, APIPermissions()) {
		return "api"
	}
	if samePermissions(p, SubmitterPermissions()) {
		return "submitter"
	}
	for _, s := range p.Subscribe.Allow {
		if host, ok := strings.CutPrefix(s, queue.ControlSubject); ok && samePermissions(p, WorkerPermissions(host)) {
			return "worker:" + host
		}
	}
	return ""
}

func samePermissions(a, b *server.Permissions) bool {
	same := func(x, y []string) bool {
		x, y = slices.Clone(x), slices.Clone(y)
		slices.Sort(x)
		slices.Sort(y)
		return slices.Equal(x, y)
	}
	return same(a.Publish.Allow, b.Publish.Allow) && same(a.Subscribe.Allow, b.Subscribe.Allow) &&
		len(a.Publish.Deny) == 0 && len(a.Subscribe.Deny) == 0 && a.Response == nil
}
