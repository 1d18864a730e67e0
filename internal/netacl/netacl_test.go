package netacl

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
)

func testACL(t *testing.T) *ACL {
	t.Helper()
	a, err := New(config.ACL{
		Allow:          []string{"198.51.100.0/24", "10.0.0.0/8", "2001:db8::/32", "192.0.2.7"},
		Deny:           []string{"203.0.113.0/24", "2001:db8:bad::/48", "10.66.0.0/16"},
		TrustedProxies: []string{"10.0.0.1", "10.0.0.2", "fd00::/64", "::ffff:10.9.0.0/112"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestClientIP(t *testing.T) {
	a := testACL(t)
	tests := []struct {
		name   string
		remote string
		xff    []string
		want   string // "" expects an error
	}{
		{"untrusted peer", "203.0.113.5:4711", nil, "203.0.113.5"},
		{"spoofed XFF from an untrusted peer is ignored", "203.0.113.5:4711", []string{"198.51.100.9"}, "203.0.113.5"},
		{"garbage XFF from an untrusted peer is ignored", "203.0.113.5:4711", []string{"not-an-ip"}, "203.0.113.5"},
		{"trusted proxy without XFF is the client", "10.0.0.1:80", nil, "10.0.0.1"},
		{"trusted proxy with an empty header line", "10.0.0.1:80", []string{""}, "10.0.0.1"},
		{"trusted proxy is honored", "10.0.0.1:80", []string{"203.0.113.5"}, "203.0.113.5"},
		{"client-supplied entries left of the real client are ignored", "10.0.0.1:80", []string{"198.51.100.9, 203.0.113.5"}, "203.0.113.5"},
		{"two trusted proxies", "10.0.0.1:80", []string{"198.51.100.9, 203.0.113.5, 10.0.0.2"}, "203.0.113.5"},
		{"chain over several header lines", "10.0.0.1:80", []string{"198.51.100.9", "203.0.113.5, 10.0.0.2"}, "203.0.113.5"},
		{"an untrusted hop stops the walk", "10.0.0.1:80", []string{"198.51.100.9, 192.0.2.50, 10.0.0.2"}, "192.0.2.50"},
		{"all hops trusted: left-most", "10.0.0.1:80", []string{"10.0.0.2"}, "10.0.0.2"},
		{"no spaces after commas", "10.0.0.1:80", []string{"198.51.100.9,203.0.113.5,10.0.0.2"}, "203.0.113.5"},
		{"IPv6 peer", "[2001:db8::1]:443", nil, "2001:db8::1"},
		{"IPv6 trusted proxy, IPv6 client", "[fd00::5]:443", []string{"2001:db8::7"}, "2001:db8::7"},
		{"IPv6 trusted proxy, IPv4 client", "[fd00::5]:443", []string{"203.0.113.5"}, "203.0.113.5"},
		{"XFF entries with ports", "10.0.0.1:80", []string{"[2001:db8::7]:5555, 203.0.113.5:1234, 10.0.0.2:80"}, "203.0.113.5"},
		{"bracketed IPv6 XFF entry", "10.0.0.1:80", []string{"[2001:db8::7]"}, "2001:db8::7"},
		{"IPv4-mapped peer is unmapped", "[::ffff:203.0.113.5]:80", nil, "203.0.113.5"},
		{"IPv4-mapped trusted proxy is trusted", "[::ffff:10.0.0.1]:80", []string{"203.0.113.5"}, "203.0.113.5"},
		{"IPv4-mapped XFF entry is unmapped", "10.0.0.1:80", []string{"::ffff:203.0.113.5"}, "203.0.113.5"},
		{"mapped trusted proxy entry matches as IPv4", "10.9.0.3:80", []string{"203.0.113.5"}, "203.0.113.5"},
		{"zone dropped", "[fe80::1%eth0]:80", nil, "fe80::1"},
		{"bare peer address", "192.0.2.7", nil, "192.0.2.7"},
		{"malformed entry left of the client is never read", "10.0.0.1:80", []string{"garbage, 203.0.113.5"}, "203.0.113.5"},

		{"malformed XFF from a trusted proxy", "10.0.0.1:80", []string{"garbage"}, ""},
		{"unknown XFF from a trusted proxy", "10.0.0.1:80", []string{"unknown"}, ""},
		{"empty hop reached through trusted proxies", "10.0.0.1:80", []string{"203.0.113.5,,10.0.0.2"}, ""},
		{"host name in XFF", "10.0.0.1:80", []string{"evil.example"}, ""},
		{"CIDR in XFF", "10.0.0.1:80", []string{"203.0.113.0/24"}, ""},
		{"empty remote address", "", nil, ""},
		{"unix socket peer", "@", nil, ""},
		{"host name peer", "example.com:80", nil, ""},
		{"unbracketed IPv6 with port", "2001:db8::1:443:x", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := a.ClientIP(tt.remote, tt.xff)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("ClientIP = %s, want an error", got)
				}
				if order.ErrorCode(err) != order.CodeForbidden {
					t.Fatalf("err = %v, want %s", err, order.CodeForbidden)
				}
				return
			}
			if err != nil {
				t.Fatalf("ClientIP: %v", err)
			}
			if got != netip.MustParseAddr(tt.want) {
				t.Fatalf("ClientIP = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestAllowed(t *testing.T) {
	restricted := testACL(t)
	denyOnly, err := New(config.ACL{Deny: []string{"203.0.113.0/24"}})
	if err != nil {
		t.Fatal(err)
	}
	open, err := New(config.ACL{})
	if err != nil {
		t.Fatal(err)
	}
	closed, err := New(config.ACL{Deny: []string{"0.0.0.0/0", "::/0"}, Allow: []string{"10.0.0.0/8"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		acl    *ACL
		ip     netip.Addr
		want   bool
		reason string
	}{
		{"denied", restricted, netip.MustParseAddr("203.0.113.5"), false, "denied by acl.deny 203.0.113.0/24"},
		{"allowed CIDR", restricted, netip.MustParseAddr("198.51.100.9"), true, "allowed by acl.allow 198.51.100.0/24"},
		{"allowed single host", restricted, netip.MustParseAddr("192.0.2.7"), true, "allowed by acl.allow 192.0.2.7/32"},
		{"neighbour of a single host", restricted, netip.MustParseAddr("192.0.2.8"), false, "not in acl.allow"},
		{"deny wins inside an allowed range", restricted, netip.MustParseAddr("10.66.1.1"), false, "denied by acl.deny 10.66.0.0/16"},
		{"IPv6 allowed", restricted, netip.MustParseAddr("2001:db8::1"), true, "allowed by acl.allow 2001:db8::/32"},
		{"IPv6 deny wins", restricted, netip.MustParseAddr("2001:db8:bad::1"), false, "denied by acl.deny 2001:db8:bad::/48"},
		{"IPv6 not listed", restricted, netip.MustParseAddr("2001:db9::1"), false, "not in acl.allow"},
		{"IPv4-mapped allowed", restricted, netip.MustParseAddr("::ffff:198.51.100.9"), true, "allowed by acl.allow 198.51.100.0/24"},
		{"IPv4-mapped denied", restricted, netip.MustParseAddr("::ffff:203.0.113.5"), false, "denied by acl.deny 203.0.113.0/24"},
		{"zero address", restricted, netip.Addr{}, false, "invalid client address"},
		{"deny-only: other addresses pass", denyOnly, netip.MustParseAddr("192.0.2.1"), true, "no acl.allow list"},
		{"deny-only: denied", denyOnly, netip.MustParseAddr("203.0.113.1"), false, "denied by acl.deny 203.0.113.0/24"},
		{"empty ACL passes everything", open, netip.MustParseAddr("2001:db8::1"), true, "no acl.allow list"},
		{"deny all beats allow", closed, netip.MustParseAddr("10.1.1.1"), false, "denied by acl.deny 0.0.0.0/0"},
		{"deny all IPv6", closed, netip.MustParseAddr("::1"), false, "denied by acl.deny ::/0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reason := tt.acl.Allowed(tt.ip)
			if got != tt.want || reason != tt.reason {
				t.Fatalf("Allowed(%s) = %v, %q; want %v, %q", tt.ip, got, reason, tt.want, tt.reason)
			}
		})
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		name  string
		cfg   config.ACL
		check string // an address the list must then contain (allow list), when ok
		want  string // error substring; "" means ok
	}{
		{"bare IPv4 is /32", config.ACL{Allow: []string{"192.0.2.7"}}, "192.0.2.7", ""},
		{"bare IPv6 is /128", config.ACL{Allow: []string{"2001:db8::1"}}, "2001:db8::1", ""},
		{"whitespace trimmed", config.ACL{Allow: []string{" 10.0.0.0/8 "}}, "10.1.2.3", ""},
		{"host bits masked", config.ACL{Allow: []string{"10.1.2.3/8"}}, "10.200.0.1", ""},
		{"IPv4-mapped prefix stored as IPv4", config.ACL{Allow: []string{"::ffff:10.0.0.0/104"}}, "10.1.2.3", ""},
		{"IPv4-mapped address stored as IPv4", config.ACL{Allow: []string{"::ffff:192.0.2.7"}}, "192.0.2.7", ""},
		{"prefix too long", config.ACL{Allow: []string{"10.0.0.0/33"}}, "", `acl.allow: "10.0.0.0/33"`},
		{"bad octet", config.ACL{Deny: []string{"300.1.1.1"}}, "", `acl.deny: "300.1.1.1"`},
		{"host name", config.ACL{TrustedProxies: []string{"proxy.example"}}, "", `acl.trusted_proxies: "proxy.example"`},
		{"empty entry", config.ACL{Deny: []string{""}}, "", `acl.deny: ""`},
		{"zoned address", config.ACL{Allow: []string{"fe80::1%eth0"}}, "", "zoned"},
		{"mapped prefix shorter than /96", config.ACL{Allow: []string{"::ffff:0:0/80"}}, "", "at least /96"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := New(tt.cfg)
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("New err = %v, want %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if ok, reason := a.Allowed(netip.MustParseAddr(tt.check)); !ok {
				t.Fatalf("Allowed(%s) = false (%s)", tt.check, reason)
			}
		})
	}
}
