package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestServeBannerHidesPasswords: serve's banner goes to stdout, the
// journal under systemd. Its add-a-worker line printed an external
// database_url whole, password included, and its NATS lines an external
// nats.url's password or token; every URL is printed with them hidden,
// in each form PostgreSQL and NATS take them.
func TestServeBannerHidesPasswords(t *testing.T) {
	const secret = "Sec4etPa55"
	for _, c := range []struct{ dsn, nats, wantDSN, wantNATS string }{
		{"postgres://orderly:" + secret + "@db.example.net:5432/orderly?sslmode=verify-full", "nats://api:" + secret + "@nats1:4222,nats://api:" + secret + "@nats2:4222",
			"postgres://orderly:***@db.example.net:5432/orderly?sslmode=verify-full", "nats://api:***@nats1:4222,nats://api:***@nats2:4222"},
		{"postgresql://orderly@db/orderly?password=" + secret + "&sslmode=require", "nats://" + secret + "@nats1:4222",
			"?password=***&sslmode=require", "nats://***@nats1:4222"},
		{"host=db user=orderly password='" + secret + " x' dbname=orderly", "nats://127.0.0.1:4222",
			"password=*** dbname=orderly", "nats://127.0.0.1:4222"},
		{"host=db user=orderly password=" + secret + " dbname=orderly", "nats://127.0.0.1:4222",
			"password=*** dbname=orderly", "nats://127.0.0.1:4222"},
	} {
		var b strings.Builder
		printServeBanner(&b, "http://127.0.0.1:8080", "/var/lib/orderly/admin.token", "web-1", c.nats, "", c.dsn, nil)
		out := b.String()
		if strings.Contains(out, secret) {
			t.Errorf("the banner shows the password:\n%s", out)
		}
		if !strings.Contains(out, c.wantDSN) || !strings.Contains(out, c.wantNATS) {
			t.Errorf("want %q and %q in\n%s", c.wantDSN, c.wantNATS, out)
		}
	}
	// The managed PostgreSQL's URL has no password and is printed as it is.
	const managed = "postgres://postgres@/orderly?host=%2Fvar%2Flib%2Forderly%2Fpg%2Frun&port=5432&sslmode=disable"
	if got := redactDSN(managed); got != managed {
		t.Errorf("redactDSN(%s) = %s", managed, got)
	}
}

// TestServeBannerNamesTheUIAndTheClient: serve's banner names the web
// UI's address (the README's "Open …/ui/"), and, when serve runs on
// another address or data dir than the client's defaults (deploy.md, "A
// second serve on one machine"), the variables the client commands then
// need, so that `orderly hosts` finds it. A newcomer learnt them from
// two errors in turn: no data/admin.token, then the API not reachable at
// 127.0.0.1:8080.
func TestServeBannerNamesTheUIAndTheClient(t *testing.T) {
	dsn := "postgres://postgres@/orderly?host=%2Fsrv%2Fpg%2Frun&port=5432&sslmode=disable"
	// serve itself passes the token file under its data dir made absolute:
	// `make run`'s ./data, so named, is still the client's default.
	ownData, err := filepath.Abs(defaultDataDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		url, tokenFile, want, not string
	}{
		{"http://127.0.0.1:8080", "data/admin.token", "  web UI:      http://127.0.0.1:8080/ui/   (sign in with the admin token)\n", "ORDERLY_"},
		{"http://127.0.0.1:8080", filepath.Join(ownData, "admin.token"), "  web UI:      http://127.0.0.1:8080/ui/   (sign in with the admin token)\n", "ORDERLY_"},
		{"http://127.0.0.1:9090", "/tmp/orderly/admin.token", "  client:      export ORDERLY_URL=http://127.0.0.1:9090 ORDERLY_DATA_DIR=/tmp/orderly   (then orderly submit, ls, hosts: docs/cli.md)\n", "ORDERLY_TOKEN"},
		{"http://127.0.0.1:9090", "data/admin.token", "  client:      export ORDERLY_URL=http://127.0.0.1:9090   (then", "ORDERLY_DATA_DIR"},
		{"http://127.0.0.1:8080", "/srv/my data/admin.token", "  client:      export ORDERLY_DATA_DIR='/srv/my data'   (then", "ORDERLY_URL"},
	} {
		var b strings.Builder
		printServeBanner(&b, c.url, c.tokenFile, "web-1", "nats://127.0.0.1:4222", "/srv/nats-creds", dsn, []string{"web-1"})
		out := b.String()
		if !strings.Contains(out, c.want) || strings.Contains(out, c.not) {
			t.Errorf("serve on %s with %s: want %q and no %q in\n%s", c.url, c.tokenFile, c.want, c.not, out)
		}
	}
}
