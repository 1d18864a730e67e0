package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/testenv"
)

// servingTLS serves conf on a real TLS listener and returns its address.
// Each connection gets one byte once its handshake succeeded, so that a
// client learns whether the server took its certificate (under TLS 1.3
// the client's handshake ends before the server has checked it).
func servingTLS(t *testing.T, conf *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				if conn.(*tls.Conn).Handshake() == nil {
					_, _ = conn.Write([]byte{1})
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// handshake makes a new connection to addr trusting ca, presenting client
// when set, and returns the serial of the certificate it was served and
// whether the server took the connection.
func handshake(t *testing.T, addr string, ca *testCA, client *tls.Certificate) (*big.Int, error) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	conf := &tls.Config{RootCAs: pool}
	if client != nil {
		conf.Certificates = []tls.Certificate{*client}
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, conf)
	if err != nil {
		t.Fatalf("a new TLS connection to %s: %v", addr, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	serial := conn.ConnectionState().PeerCertificates[0].SerialNumber
	_, err = conn.Read(make([]byte, 1))
	return serial, err
}

// servedBy is the serial a new handshake with addr gets.
func servedBy(t *testing.T, addr string, ca *testCA) *big.Int {
	t.Helper()
	serial, err := handshake(t, addr, ca, nil)
	if err != nil {
		t.Fatalf("the server refused a connection: %v", err)
	}
	return serial
}

// sameSizeLeaf writes a new leaf of ca, named as crt, in a directory of
// its own, whose files are as long as crt and key: an ECDSA signature's
// length varies by a byte or two, so a renewed certificate is often, not
// always, of the old one's size.
func sameSizeLeaf(t *testing.T, ca *testCA, crt, key string) (newCrt, newKey string) {
	t.Helper()
	dir, name := t.TempDir(), strings.TrimSuffix(filepath.Base(crt), ".crt")
	size := func(f string) int64 {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	for range 200 {
		newCrt, newKey = ca.leaf(t, dir, name, []string{"127.0.0.1"}, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
		if size(newCrt) == size(crt) && size(newKey) == size(key) {
			return newCrt, newKey
		}
	}
	t.Fatal("no leaf of the old files' sizes in 200 tries")
	return "", ""
}

// servedAPI is an API pair of a CA of its own, valid for a day, loaded
// and served on a real TLS listener at addr.
type servedAPI struct {
	ca            *testCA
	dir, crt, key string
	c             *servedCertificate
	addr          string
}

func newServedAPI(t *testing.T, caName string) servedAPI {
	t.Helper()
	s := servedAPI{dir: t.TempDir()}
	s.ca = newTestCA(t, s.dir, caName)
	s.crt, s.key = s.ca.leaf(t, s.dir, "api", []string{"127.0.0.1"}, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	var err error
	if s.c, err = newAPICertificate(s.crt, s.key, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	s.addr = servingTLS(t, &tls.Config{GetCertificate: s.c.GetCertificate})
	return s
}

// TestServedCertificateRenewalKeepingSizeAndTimeIsTaken: a renewal that
// leaves both files of the pair with their size and modification time is
// served after the disk check, as any other. The check compared only
// those two, and missed it until a reload: `cp -p` of files of the same
// size (written in place, the inode kept) and `rsync -t` (a new file with
// the source's time renamed over the old).
func TestServedCertificateRenewalKeepingSizeAndTimeIsTaken(t *testing.T) {
	s := newServedAPI(t, "stamp-ca")
	ca, crt, key, c, addr := s.ca, s.crt, s.key, s.c, s.addr
	for _, how := range []struct {
		name string
		put  func(from, to string) error
	}{
		{"cp -p", func(from, to string) error {
			if out, err := exec.Command("cp", "-p", from, to).CombinedOutput(); err != nil {
				return fmt.Errorf("cp -p: %w: %s", err, out)
			}
			return nil
		}},
		{"rsync -t", os.Rename},
	} {
		t.Run(how.name, func(t *testing.T) {
			newCrt, newKey := sameSizeLeaf(t, ca, crt, key)
			want := serialOf(t, newCrt)
			for from, to := range map[string]string{newKey: key, newCrt: crt} {
				before, err := os.Stat(to)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.Chtimes(from, before.ModTime(), before.ModTime()); err != nil {
					t.Fatal(err)
				}
				if err := how.put(from, to); err != nil {
					t.Fatal(err)
				}
				after, err := os.Stat(to)
				if err != nil {
					t.Fatal(err)
				}
				if after.Size() != before.Size() || !after.ModTime().Equal(before.ModTime()) {
					t.Fatalf("%s changed size or time: %d %s, was %d %s", to, after.Size(), after.ModTime(), before.Size(), before.ModTime())
				}
			}
			c.check(time.Now())
			if got := servedBy(t, addr, ca); got.Cmp(want) != 0 {
				t.Fatalf("after a renewal by %s (size and time kept) and a check, a new connection got serial %s, want the renewed %s", how.name, got, want)
			}
		})
	}
}

// TestServedCertificateReloadKeepsANewerPairTheDiskCheckTook: a reload
// reads the pair in its prepare and installs it at its commit; a disk
// check in between that took the files as they were later must not be
// undone by that commit. It was: the older pair was served until the
// next check, a minute. A reload naming other files still takes them.
func TestServedCertificateReloadKeepsANewerPairTheDiskCheckTook(t *testing.T) {
	s := newServedAPI(t, "order-ca")
	ca, dir, crt, key, c, addr := s.ca, s.dir, s.crt, s.key, s.c, s.addr
	now := time.Now()
	renew := func(name string) *big.Int {
		return renewPair(t, ca, dir, name, crt, key, now.Add(-time.Minute), now.Add(90*24*time.Hour))
	}

	first := renew("api-first")
	commit, err := c.prepare(t.Context(), config.Config{HTTP: config.HTTP{TLSCert: crt, TLSKey: key}})
	if err != nil || commit == nil {
		t.Fatalf("prepare of a renewed pair: commit %v, %v", commit != nil, err)
	}
	second := renew("api-second")
	c.check(time.Now())
	if got := servedBy(t, addr, ca); got.Cmp(second) != 0 {
		t.Fatalf("the disk check did not take the second renewal: serial %s, want %s", got, second)
	}
	commit()
	if got := servedBy(t, addr, ca); got.Cmp(second) != 0 {
		t.Fatalf("the reload's commit after the check served serial %s (read before it; the first renewal was %s), want the newer %s",
			got, first, second)
	}

	// Other files: the reload's pair is what the config now names.
	otherCrt, otherKey := ca.leaf(t, dir, "api-other", []string{"127.0.0.1"}, now.Add(-time.Minute), now.Add(90*24*time.Hour))
	other := serialOf(t, otherCrt)
	commit, err = c.prepare(t.Context(), config.Config{HTTP: config.HTTP{TLSCert: otherCrt, TLSKey: otherKey}})
	if err != nil || commit == nil {
		t.Fatalf("prepare of a pair at other paths: commit %v, %v", commit != nil, err)
	}
	third := renew("api-third")
	c.check(time.Now())
	if got := servedBy(t, addr, ca); got.Cmp(third) != 0 {
		t.Fatalf("the disk check did not take the third renewal: serial %s, want %s", got, third)
	}
	commit()
	if got := servedBy(t, addr, ca); got.Cmp(other) != 0 {
		t.Fatalf("a reload naming other files served serial %s after its commit, want theirs, %s", got, other)
	}
}

// TestEmbeddedNATSClientCARenewedOnDisk: the client CA file of serve's
// embedded NATS (nats.listen_tls_client_ca) is taken again when it
// changes, as its pair is: a CA rotated by a bundle of the new and the
// old CA, then the new alone, is what new handshakes are checked
// against. It was read at start only, so a worker the new CA signed was
// refused until a restart. A check that reads the file while it is
// being written (cut inside a certificate) neither installs what it read
// (the pool of the whole certificates alone would refuse the workers of
// the cut one) nor logs an ERROR; the file left so is logged once. A
// reload naming a CA file at another path takes it.
func TestEmbeddedNATSClientCARenewedOnDisk(t *testing.T) {
	dir := t.TempDir()
	oldCA, newCA := newTestCA(t, dir, "old-ca"), newTestCA(t, dir, "new-ca")
	now := time.Now()
	crt, key := oldCA.leaf(t, dir, "nats", []string{"127.0.0.1"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	caFile := filepath.Join(dir, "client-ca.pem")
	pemOf := func(ca *testCA) []byte {
		b, err := os.ReadFile(ca.path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	oldPEM, newPEM := pemOf(oldCA), pemOf(newCA)
	if err := os.WriteFile(caFile, oldPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	var logs testenv.LogBuffer
	conf, c, err := embeddedNATSTLS(config.NATS{ListenTLSCert: crt, ListenTLSKey: key, ListenTLSClientCA: caFile},
		slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	addr := servingTLS(t, conf)
	clientOf := func(ca *testCA, name string) *tls.Certificate {
		crt, key := ca.client(t, dir, name)
		pair, err := tls.LoadX509KeyPair(crt, key)
		if err != nil {
			t.Fatal(err)
		}
		return &pair
	}
	oldWorker, newWorker := clientOf(oldCA, "w-old"), clientOf(newCA, "w-new")
	takes := func(step string, wantOld, wantNew bool) {
		t.Helper()
		for _, w := range []struct {
			name   string
			client *tls.Certificate
			want   bool
		}{{"the old CA's", oldWorker, wantOld}, {"the new CA's", newWorker, wantNew}} {
			if _, err := handshake(t, addr, oldCA, w.client); (err == nil) != w.want {
				t.Fatalf("%s: a worker certificate of %s: taken %v (%v), want %v", step, w.name, err == nil, err, w.want)
			}
		}
	}
	errors := func() int { return strings.Count(logs.String(), `"level":"ERROR"`) }
	takes("at start", true, false)

	// Written in place, read when cut inside the old CA: nothing taken, no ERROR.
	bundle := append(append([]byte{}, newPEM...), oldPEM...)
	if err := os.WriteFile(caFile, bundle[:len(newPEM)+len(oldPEM)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	c.check(time.Now())
	takes("the bundle half written", true, false)
	if n := errors(); n != 0 {
		t.Fatalf("a check of the CA file half written logged %d ERRORs:\n%s", n, logs.String())
	}
	if err := os.WriteFile(caFile, bundle, 0o644); err != nil {
		t.Fatal(err)
	}
	c.check(time.Now())
	takes("the bundle of both CAs", true, true)
	if !strings.Contains(logs.String(), `"client_ca":"`+caFile+`"`) {
		t.Errorf("the new client CA is not logged:\n%s", logs.String())
	}

	// The old CA retired: a new file renamed over.
	if err := os.WriteFile(caFile+".new", newPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(caFile+".new", caFile); err != nil {
		t.Fatal(err)
	}
	c.check(time.Now())
	takes("the new CA alone", false, true)

	// Left cut: said at the second check of the same file, once.
	if err := os.WriteFile(caFile, bundle[:len(newPEM)+len(oldPEM)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		c.check(time.Now())
	}
	if n := errors(); n != 1 || !strings.Contains(logs.String(), "a PEM block is cut short") {
		t.Fatalf("a CA file left cut logged %d ERRORs, want 1 saying it is cut:\n%s", n, logs.String())
	}
	takes("the CA file left cut", false, true)

	// A reload naming another CA file.
	otherFile := filepath.Join(dir, "client-ca-2.pem")
	if err := os.WriteFile(otherFile, oldPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	commit, err := c.prepare(t.Context(), config.Config{NATS: config.NATS{ListenTLSCert: crt, ListenTLSKey: key, ListenTLSClientCA: otherFile}})
	if err != nil || commit == nil {
		t.Fatalf("prepare of another client CA file: commit %v, %v", commit != nil, err)
	}
	commit()
	takes("a reload naming another CA file", true, false)
}
