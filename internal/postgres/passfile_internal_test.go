package postgres

import (
	"os"
	"path/filepath"
	"testing"
)

// TestNewConnectionsReadThePassfileAgain: a password rotated in the
// pgpass file (docs/deploy.md, "Adding, retiring and re-keying a host")
// reaches the connections a running process makes after it. pgx read the
// file once, when it parsed the URL, and every later connection sent the
// old password until the process restarted.
func TestNewConnectionsReadThePassfileAgain(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pgpass")
	write := func(password string) {
		t.Helper()
		if err := os.WriteFile(file, []byte("db.example.net:5432:orderly:orderly_worker_web1:"+password+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("before-rotation")
	cfg, err := poolConfig("postgres://orderly_worker_web1@db.example.net:5432/orderly?passfile=" + file)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ConnConfig.Password != "before-rotation" {
		t.Fatalf("parsed password %q, want the file's", cfg.ConnConfig.Password)
	}
	cases := []struct {
		name, file, want string
	}{
		{"rotated", "after-rotation", "after-rotation"},
		{"file without the login's line", "", "before-rotation"},
	}
	for _, tc := range cases {
		if tc.file != "" {
			write(tc.file)
		} else if err := os.WriteFile(file, []byte("other:5432:orderly:someone:x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cc := cfg.ConnConfig.Copy()
		if cfg.BeforeConnect == nil {
			t.Fatal("no BeforeConnect: a new connection uses the password read at start")
		}
		if err := cfg.BeforeConnect(t.Context(), cc); err != nil {
			t.Fatal(err)
		}
		if cc.Password != tc.want {
			t.Errorf("%s: a new connection's password is %q, want %q", tc.name, cc.Password, tc.want)
		}
	}
}
