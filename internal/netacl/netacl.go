// Package netacl is orderly's network layer (DESIGN §4.1): which client
// addresses may talk to the API at all, and which address a request really
// comes from when it passes through reverse proxies.
package netacl

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/order"
)

// ACL holds parsed CIDR lists. It is immutable once built, so it can serve
// concurrent requests and a config reload swaps in a new one.
type ACL struct {
	allow   []netip.Prefix
	deny    []netip.Prefix
	trusted []netip.Prefix
}

// New parses cfg. Entries are CIDRs or bare addresses (a host: /32 or
// /128), IPv4 or IPv6; IPv4-mapped IPv6 entries are stored as IPv4 so they
// match the unmapped addresses ClientIP returns. A bad entry is an error
// naming it, because a silently dropped deny entry would open the API.
func New(cfg config.ACL) (*ACL, error) {
	var a ACL
	var err error
	if a.allow, err = parseList("acl.allow", cfg.Allow); err != nil {
		return nil, err
	}
	if a.deny, err = parseList("acl.deny", cfg.Deny); err != nil {
		return nil, err
	}
	if a.trusted, err = parseList("acl.trusted_proxies", cfg.TrustedProxies); err != nil {
		return nil, err
	}
	return &a, nil
}

func parseList(key string, entries []string) ([]netip.Prefix, error) {
	ps := make([]netip.Prefix, 0, len(entries))
	for _, s := range entries {
		p, err := parsePrefix(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not an IP address or CIDR: %w", key, s, err)
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// parsePrefix accepts "10.0.0.0/8", "2001:db8::/32", "192.0.2.7" and
// "::ffff:10.0.0.0/104" (stored as 10.0.0.0/8). Host bits are masked off,
// so "10.1.2.3/8" means 10.0.0.0/8.
func parsePrefix(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, err
		}
	} else {
		addr, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if addr.Zone() != "" {
			return netip.Prefix{}, errors.New("zoned addresses are not supported")
		}
		p = netip.PrefixFrom(addr, addr.BitLen())
	}
	if addr := p.Addr(); addr.Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, errors.New("an IPv4-mapped prefix needs at least /96")
		}
		p = netip.PrefixFrom(addr.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// ClientIP returns the address a request comes from. It is the socket peer
// (remoteAddr, "ip:port" as net/http gives it) unless that peer is a trusted
// proxy; then X-Forwarded-For (xff: the header's values, in order) is read
// from the right, skipping trusted proxies, and the first other address is
// the client. Entries left of it were written by the client and are never
// believed, so a client cannot spoof its address by sending the header.
// If every hop is a trusted proxy, the left-most one is the client. A
// malformed entry reached while walking is an error: a proxy we trust wrote
// something we cannot read, and guessing could turn a denied client into
// an allowed proxy address.
func (a *ACL) ClientIP(remoteAddr string, xff []string) (netip.Addr, error) {
	peer, err := parseHostAddr(remoteAddr)
	if err != nil {
		return netip.Addr{}, &order.Error{Code: order.CodeForbidden, Message: "cannot determine client address", Err: fmt.Errorf("remote address %q: %w", remoteAddr, err)}
	}
	if !a.isTrusted(peer) {
		return peer, nil
	}
	hops := splitXFF(xff)
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		addr, err := parseHostAddr(hops[i])
		if err != nil {
			return netip.Addr{}, &order.Error{Code: order.CodeForbidden, Message: "malformed X-Forwarded-For", Err: fmt.Errorf("X-Forwarded-For entry %d from trusted proxy %s: %w", i, client, err)}
		}
		client = addr
		if !a.isTrusted(addr) {
			break
		}
	}
	return client, nil
}

// Allowed reports whether ip may use the API, and why, for the audit log:
// a deny entry always wins; then, with an allow list, only listed addresses
// pass; with no allow list, anything not denied passes.
func (a *ACL) Allowed(ip netip.Addr) (bool, string) {
	if !ip.IsValid() {
		return false, "invalid client address"
	}
	ip = ip.Unmap().WithZone("")
	if p, ok := match(a.deny, ip); ok {
		return false, "denied by acl.deny " + p.String()
	}
	if len(a.allow) == 0 {
		return true, "no acl.allow list"
	}
	if p, ok := match(a.allow, ip); ok {
		return true, "allowed by acl.allow " + p.String()
	}
	return false, "not in acl.allow"
}

// FromTrustedProxy reports whether remoteAddr, a request's socket peer,
// is listed in acl.trusted_proxies: only then is what it forwards about
// the client believed.
func (a *ACL) FromTrustedProxy(remoteAddr string) bool {
	peer, err := parseHostAddr(remoteAddr)
	return err == nil && a.isTrusted(peer)
}

func (a *ACL) isTrusted(ip netip.Addr) bool {
	_, ok := match(a.trusted, ip)
	return ok
}

func match(ps []netip.Prefix, ip netip.Addr) (netip.Prefix, bool) {
	for _, p := range ps {
		if p.Contains(ip) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// splitXFF flattens the header's values (a request may carry several
// X-Forwarded-For lines) into one list of hops, left to right.
func splitXFF(values []string) []string {
	var hops []string
	for _, v := range values {
		if strings.TrimSpace(v) == "" {
			continue // an empty header line carries no hops
		}
		for h := range strings.SplitSeq(v, ",") {
			hops = append(hops, strings.TrimSpace(h))
		}
	}
	return hops
}

// parseHostAddr reads an address as peers and proxies write it: "ip:port",
// "[v6]:port", a bare IPv4 or IPv6 address, or "[v6]". The zone is dropped
// and IPv4-mapped IPv6 is unmapped, so ACL entries written as IPv4 match.
func parseHostAddr(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, errors.New("empty address")
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone(""), nil
	}
	bare := s
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		bare = s[1 : len(s)-1]
	}
	addr, err := netip.ParseAddr(bare)
	if err != nil {
		return netip.Addr{}, errors.New("not an IP address")
	}
	return addr.Unmap().WithZone(""), nil
}
