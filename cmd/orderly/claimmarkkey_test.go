package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nkeys"
)

// TestClaimMarkKeyFromTheWorkersSeed: the claim mark key is the same
// derived from an nkey seed file and from a .creds file holding that
// seed after its JWT (a worker may be given either), differs for another
// seed, and is none without a file; a file without a seed is an error,
// not a worker that signs nothing.
func TestClaimMarkKeyFromTheWorkersSeed(t *testing.T) {
	dir := t.TempDir()
	seedOf := func() []byte {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		seed, err := kp.Seed()
		if err != nil {
			t.Fatal(err)
		}
		return seed
	}
	write := func(name string, b []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	seed := seedOf()
	nk := write("worker.nk", append(seed, '\n'))
	// A .creds file as nsc writes it; the JWT's content does not matter
	// here, only where the seed sits.
	creds := write("worker.creds", []byte("-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.c2ln\n------END NATS USER JWT------\n\n"+
		"************************* IMPORTANT *************************\nNKEY Seed printed below can be used to sign and prove identity.\n\n"+
		"-----BEGIN USER NKEY SEED-----\n"+string(seed)+"\n------END USER NKEY SEED------\n"))
	other := write("other.nk", seedOf())

	fromNK, err := claimMarkKey(nk)
	if err != nil || len(fromNK) == 0 {
		t.Fatalf("key from the nkey file: %x %v", fromNK, err)
	}
	fromCreds, err := claimMarkKey(creds)
	if err != nil || !bytes.Equal(fromCreds, fromNK) {
		t.Fatalf("key from the .creds file: %x %v, want the nkey file's %x", fromCreds, err, fromNK)
	}
	if fromOther, err := claimMarkKey(other); err != nil || bytes.Equal(fromOther, fromNK) {
		t.Fatalf("key from another seed: %x %v, want another key", fromOther, err)
	}
	if bytes.Contains(fromNK, seed) {
		t.Fatal("the key holds the seed")
	}
	if k, err := claimMarkKey(""); k != nil || err != nil {
		t.Fatalf("no file: %x %v, want no key", k, err)
	}
	if k, err := claimMarkKey(write("junk", []byte("not a seed\n"))); err == nil {
		t.Fatalf("a file without a seed: %x, want an error", k)
	}
}
