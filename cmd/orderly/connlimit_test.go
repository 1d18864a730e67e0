package main

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// connLimitClient is one keep-alive connection to the API from the local
// address src ("" for any).
type connLimitClient struct {
	c net.Conn
	r *bufio.Reader
}

func dialFrom(t *testing.T, apiURL, src string) *connLimitClient {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.Dial("tcp", strings.TrimPrefix(apiURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &connLimitClient{c: c, r: bufio.NewReader(c)}
}

// healthz sends GET /healthz on the connection and reports whether an
// answer 200 came within wait (false: closed, or nothing yet).
func (k *connLimitClient) healthz(t *testing.T, wait time.Duration) bool {
	t.Helper()
	_ = k.c.SetDeadline(time.Now().Add(wait))
	if _, err := k.c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: orderly\r\n\r\n")); err != nil {
		return false
	}
	return k.answered(t)
}

func (k *connLimitClient) answered(t *testing.T) bool {
	t.Helper()
	resp, err := http.ReadResponse(k.r, nil)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// One address cannot hold the API's connections (and so the process's file
// descriptors, which the worker, PostgreSQL and NATS need too): past
// http.max_connections_per_ip its new connections are closed at once,
// while other addresses are still served. Before, an unauthenticated
// client (the ACL looks at requests, not connections) opened connections
// until accept4 failed with "too many open files", and serve's PostgreSQL
// supervisor and config check failed with it.
func TestConnectionsPerAddressAreBounded(t *testing.T) {
	s := newStackFrom(t, "", map[string]any{"http.max_connections_per_ip": "3"})
	var held []*connLimitClient
	for i := range 3 {
		k := dialFrom(t, s.url, "127.0.0.1")
		if !k.healthz(t, 5*time.Second) {
			t.Fatalf("connection %d of 3 was not served", i+1)
		}
		held = append(held, k)
	}
	if dialFrom(t, s.url, "127.0.0.1").healthz(t, 5*time.Second) {
		t.Fatal("a fourth connection of the same address was served past http.max_connections_per_ip: 3")
	}
	if !dialFrom(t, s.url, "127.0.0.2").healthz(t, 5*time.Second) {
		t.Fatal("another address was refused while the first held its connections")
	}
	// A closed connection gives its place back.
	_ = held[0].c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for !dialFrom(t, s.url, "127.0.0.1").healthz(t, 2*time.Second) {
		if time.Now().After(deadline) {
			t.Fatal("the address was still refused after closing one of its connections")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Held connections keep working.
	if !held[1].healthz(t, 5*time.Second) {
		t.Fatal("a held connection stopped being served")
	}
}

// Past http.max_connections a new connection waits (in the kernel's
// backlog) until another closes, whatever its address.
func TestConnectionsInAllAreBounded(t *testing.T) {
	s := newStackFrom(t, "", map[string]any{"http.max_connections": "2", "http.max_connections_per_ip": "0"})
	a := dialFrom(t, s.url, "127.0.0.2")
	b := dialFrom(t, s.url, "127.0.0.3")
	if !a.healthz(t, 5*time.Second) || !b.healthz(t, 5*time.Second) {
		t.Fatal("the first two connections were not served")
	}
	c := dialFrom(t, s.url, "127.0.0.4")
	if c.healthz(t, 500*time.Millisecond) {
		t.Fatal("a third connection was served past http.max_connections: 2")
	}
	_ = a.c.Close()
	_ = c.c.SetDeadline(time.Now().Add(5 * time.Second))
	if !c.answered(t) {
		t.Fatal("the waiting connection was not served once another closed")
	}
}
