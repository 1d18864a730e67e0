package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/orderly-run/orderly/internal/config"
)

// certCheckEvery is how often the API looks at its certificate files for
// a renewal written without a reload. Two stat calls a minute cost
// nothing, and a minute is nothing against the weeks a renewal comes
// ahead of the old certificate's end (Let's Encrypt's 30 days).
const certCheckEvery = time.Minute

// apiCertificate is the API's HTTPS pair (http.tls_cert, http.tls_key),
// served through tls.Config.GetCertificate so that a renewed pair takes
// over without a restart: a restart dropped every SSE follower and ?wait
// (decisions.md, hJ22). A reload loads the pair again, and so does a
// change of the files on disk (run); a pair that does not load, or is
// out of its dates, is refused naming the file and the cause, and the
// old one keeps serving. Connections already open keep the certificate
// of their handshake: only new handshakes see the new one.
type apiCertificate struct {
	cur    atomic.Pointer[servedPair]
	logger *slog.Logger
	// mu makes the loads (a reload's and the disk check's) one at a
	// time, so an older read never replaces a newer one.
	mu sync.Mutex
	// failed is the disk check's last refusal, so that a broken pair is
	// logged once, not every minute.
	failed certFailure
}

// certFailure is a refusal of the disk check: the files' stamp and why.
type certFailure struct {
	stamp fileStamp
	err   string
}

// servedPair is a loaded pair with where it came from.
type servedPair struct {
	cert              *tls.Certificate
	certFile, keyFile string
	certPEM, keyPEM   []byte
	stamp             fileStamp
}

// fileStamp is what the disk check compares: os.Stat follows symbolic
// links, so certbot's live/ links and a Kubernetes secret volume's
// ..data swap show as a new modification time and size.
type fileStamp struct {
	certMod, keyMod   time.Time
	certSize, keySize int64
}

// newAPICertificate loads the pair the API starts with. Dates are not
// checked here: an expired certificate is served with a warning at start
// (warnCertificateDates), so that a renewal that came late does not turn
// into a crash loop.
func newAPICertificate(certFile, keyFile string, logger *slog.Logger) (*apiCertificate, error) {
	p, err := loadServedPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	c := &apiCertificate{logger: logger}
	c.cur.Store(p)
	return c, nil
}

// GetCertificate is the tls.Config hook: the pair serving now.
func (c *apiCertificate) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.cur.Load().cert, nil
}

// certStatus is the served certificate as GET /v1/status reports it
// (api_certificate), so that a probe can tell a renewal that was not
// taken before the log's line at each change scrolled away. The serial
// is in decimal, as the log says it, and in hex, as `openssl x509
// -serial` prints it.
type certStatus struct {
	File      string    `json:"file"`
	Subject   string    `json:"subject"`
	Serial    string    `json:"serial"`
	SerialHex string    `json:"serial_hex"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
}

// status is the pair serving now.
func (c *apiCertificate) status() certStatus {
	p := c.cur.Load()
	leaf := p.cert.Leaf
	return certStatus{File: p.certFile, Subject: leaf.Subject.String(), Serial: leaf.SerialNumber.String(),
		SerialHex: fmt.Sprintf("%X", leaf.SerialNumber), NotBefore: leaf.NotBefore.UTC(), NotAfter: leaf.NotAfter.UTC()}
}

// notAfter is the end of the certificate serving now
// (orderly_api_certificate_expiry_timestamp_seconds).
func (c *apiCertificate) notAfter() time.Time {
	return c.cur.Load().cert.Leaf.NotAfter
}

// stampOf stats both files.
func stampOf(certFile, keyFile string) (fileStamp, error) {
	ci, err := os.Stat(certFile)
	if err != nil {
		return fileStamp{}, fmt.Errorf("http.tls_cert %s: %w", certFile, err)
	}
	ki, err := os.Stat(keyFile)
	if err != nil {
		return fileStamp{}, fmt.Errorf("http.tls_key %s: %w", keyFile, err)
	}
	return fileStamp{certMod: ci.ModTime(), keyMod: ki.ModTime(), certSize: ci.Size(), keySize: ki.Size()}, nil
}

// loadServedPair reads and parses a pair. The stamp is taken before the
// read, so a write that lands after it changes the stamp again and the
// next check reads the files anew.
func loadServedPair(certFile, keyFile string) (*servedPair, error) {
	st, err := stampOf(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("http.tls_cert %s: %w", certFile, err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("http.tls_key %s: %w", keyFile, err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("http.tls_cert %s and http.tls_key %s: %w", certFile, keyFile, err)
	}
	if cert.Leaf == nil {
		// GODEBUG=x509keypairleaf=0 leaves it out; the dates and the
		// log's serial need it.
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("http.tls_cert %s: %w", certFile, err)
		}
	}
	return &servedPair{cert: &cert, certFile: certFile, keyFile: keyFile, certPEM: certPEM, keyPEM: keyPEM, stamp: st}, nil
}

// checkDates refuses a new pair whose certificate every verifying client
// would refuse: replacing the served one with it would cut clients that
// still work.
func (p *servedPair) checkDates(now time.Time) error {
	leaf := p.cert.Leaf
	switch {
	case leaf == nil:
	case now.After(leaf.NotAfter):
		return fmt.Errorf("http.tls_cert %s: the certificate expired at %s", p.certFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return fmt.Errorf("http.tls_cert %s: the certificate is not valid until %s (or this machine's clock is behind)",
			p.certFile, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

// same reports whether p holds the files and bytes of o.
func (p *servedPair) same(o *servedPair) bool {
	return p.certFile == o.certFile && p.keyFile == o.keyFile &&
		bytes.Equal(p.certPEM, o.certPEM) && bytes.Equal(p.keyPEM, o.keyPEM)
}

// prepare is the reload's part (a config.Preparer): the pair cfg names,
// at the same paths or new ones, is loaded and checked before anything
// changes, and refuses the whole reload if it is bad. A pair unchanged
// is not checked again, so an expired certificate served since the start
// does not refuse every later reload. Turning TLS off (no http.tls_cert)
// takes a restart (config.RestartKeys): the served pair stays.
func (c *apiCertificate) prepare(_ context.Context, cfg config.Config) (func(), error) {
	if cfg.HTTP.TLSCert == "" {
		return nil, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	next, err := loadServedPair(cfg.HTTP.TLSCert, cfg.HTTP.TLSKey)
	if err != nil {
		return nil, err
	}
	if next.same(c.cur.Load()) {
		return nil, nil
	}
	if err := next.checkDates(time.Now()); err != nil {
		return nil, err
	}
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.install(next, "reload")
	}, nil
}

// install serves next from the next handshake on; c.mu is held.
func (c *apiCertificate) install(next *servedPair, by string) {
	c.cur.Store(next)
	c.failed = certFailure{}
	leaf := next.cert.Leaf
	c.logger.Info("the API's certificate was loaded anew; new connections get it", "by", by,
		"setting", "http.tls_cert", "file", next.certFile, "serial", leaf.SerialNumber.String(), "not_after", leaf.NotAfter.UTC())
}

// check loads the served files again when their stamp changed. A pair
// that does not load or is out of its dates is logged (once per change
// of the files or of the cause) and the served one stays.
func (c *apiCertificate) check(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := c.cur.Load()
	st, err := stampOf(cur.certFile, cur.keyFile)
	if err == nil && st == cur.stamp {
		return
	}
	var next *servedPair
	if err == nil {
		next, err = loadServedPair(cur.certFile, cur.keyFile)
	}
	if err == nil && !next.same(cur) {
		err = next.checkDates(now)
	}
	if err != nil {
		if f := (certFailure{st, err.Error()}); f != c.failed {
			c.logger.Error("the API's certificate files changed and do not load; the served certificate stays until they are mended",
				"setting", "http.tls_cert", "file", cur.certFile, "error", err)
			c.failed = f
		}
		return
	}
	c.failed = certFailure{}
	if next.same(cur) {
		// Touched, not changed (a renewal job that wrote the same
		// bytes): remember the stamp, serve on.
		next.cert = cur.cert
		c.cur.Store(next)
		return
	}
	c.install(next, "file change")
}

// run checks the files every interval until ctx ends.
func (c *apiCertificate) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			c.check(now)
		}
	}
}
