package main

import (
	"crypto/x509"
	"net"
	"net/url"
	"os"
	"strings"

	"github.com/orderly-run/orderly/internal/config"
)

// shownURL is u, a URL serve listens at, as its banner prints it for a
// client: a listener on every address (0.0.0.0, [::]) gave its own
// address, which names no machine, so the banner told a worker on
// another machine to dial tls://0.0.0.0:4222, its own host and a name no
// certificate holds. With a certificate (leaf), the host is a name it
// holds, so that the client's check passes: one of this machine
// (localhost, a loopback address) when local, for the lines run here
// (the API's: they read the admin token on this machine), else another
// first. Without one, this machine's loopback address when local, else
// its host name. Any other address is printed as it is.
func shownURL(u string, leaf *x509.Certificate, local bool) string {
	p, err := url.Parse(u)
	if err != nil {
		return u
	}
	ip := net.ParseIP(p.Hostname())
	if ip == nil || !ip.IsUnspecified() {
		return u
	}
	p.Host = net.JoinHostPort(shownHost(leaf, ip, local), p.Port())
	return p.String()
}

// shownHost is shownURL's choice of a host for a listener on every
// address (all).
func shownHost(leaf *x509.Certificate, all net.IP, local bool) string {
	if leaf != nil {
		var names []string
		for _, n := range leaf.DNSNames {
			if !strings.HasPrefix(n, "*.") { // a wildcard is no host to dial
				names = append(names, n)
			}
		}
		for _, ip := range leaf.IPAddresses {
			if !ip.IsUnspecified() {
				names = append(names, ip.String())
			}
		}
		for _, n := range names {
			if config.LoopbackHost(n) == local {
				return n
			}
		}
		if len(names) > 0 {
			return names[0]
		}
	}
	if !local {
		if h, err := os.Hostname(); err == nil && h != "" {
			return h
		}
	}
	if all.To4() != nil {
		return "127.0.0.1"
	}
	return "::1"
}
