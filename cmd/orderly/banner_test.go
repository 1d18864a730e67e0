package main

import (
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
