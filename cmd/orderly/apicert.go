package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/orderly-run/orderly/internal/config"
)

// certCheckEvery is how often the API looks at its certificate files for
// a renewal written without a reload. Two stat calls a minute cost
// nothing, and a minute is nothing against the weeks a renewal comes
// ahead of the old certificate's end (Let's Encrypt's 30 days).
const certCheckEvery = time.Minute

// servedCertificate is a pair a server of this process presents: the
// API's HTTPS pair (http.tls_cert, http.tls_key), and serve's embedded
// NATS's (nats.listen_tls_cert, nats.listen_tls_key) with the CAs whose
// client certificates it takes (nats.listen_tls_client_ca). It is served
// through tls.Config.GetCertificate so that a renewed pair takes over
// without a restart: a restart dropped every SSE follower and ?wait
// (decisions.md, hJ22), and every worker's NATS connection. A reload
// loads the pair again, and so does a change of the files on disk (run);
// a pair that does not load, or is out of its dates, is refused naming
// the file and the cause, and the old one keeps serving. The client CA
// file goes with the pair: a CA renewed or rotated was read at start
// only, and a worker signed by the new one was refused until a restart.
// Connections already open keep the certificate of their handshake: only
// new handshakes see the new one.
type servedCertificate struct {
	cur    atomic.Pointer[servedPair]
	keys   pairKeys
	logger *slog.Logger
	// mu makes the loads (a reload's and the disk check's) one at a
	// time, so an older read never replaces a newer one.
	mu sync.Mutex
	// failed is the disk check's last refusal, so that a broken pair is
	// logged once, not every minute; unsettled is a refusal seen once,
	// logged only when the next check finds the same files refused: a
	// renewal writes its two files one after the other, and a check
	// between them read the new certificate with the old key ("private
	// key does not match public key"), an ERROR for a renewal that was
	// fine a moment later (TestAPICertificateRenewedOnDisk, under load).
	failed, unsettled certFailure
}

// pairKeys names a served pair in errors and logs, and finds it in a
// config.
type pairKeys struct {
	what          string // "the API's certificate"
	cert, key, ca string // the config keys: http.tls_cert, http.tls_key; ca "" for none
	files         func(config.Config) pairFiles
}

// pairFiles are the files of a served pair; ca is the client CA file, ""
// when the server asks for no client certificate.
type pairFiles struct {
	cert, key, ca string
}

// apiPair is the API's HTTPS pair.
var apiPair = pairKeys{what: "the API's certificate", cert: "http.tls_cert", key: "http.tls_key",
	files: func(c config.Config) pairFiles { return pairFiles{cert: c.HTTP.TLSCert, key: c.HTTP.TLSKey} }}

// natsPair is the certificate of serve's embedded NATS, and its client CA.
var natsPair = pairKeys{what: "the embedded NATS server's certificate", cert: "nats.listen_tls_cert", key: "nats.listen_tls_key",
	ca: "nats.listen_tls_client_ca", files: func(c config.Config) pairFiles {
		return pairFiles{cert: c.NATS.ListenTLSCert, key: c.NATS.ListenTLSKey, ca: c.NATS.ListenTLSClientCA}
	}}

// certFailure is a refusal of the disk check: the files' stamp and why.
type certFailure struct {
	stamp fileStamp
	err   string
}

// servedPair is a loaded pair with where it came from, and its client
// CAs when it has a CA file.
type servedPair struct {
	cert                   *tls.Certificate
	clientCAs              *x509.CertPool
	files                  pairFiles
	certPEM, keyPEM, caPEM []byte
	stamp                  fileStamp
}

// fileStamp is what the disk check compares: os.Stat follows symbolic
// links, so certbot's live/ links and a Kubernetes secret volume's
// ..data swap show as another file.
type fileStamp struct {
	cert, key, ca fileID
}

// fileID tells a file's contents apart without reading them. Size and
// modification time alone missed a renewal that keeps both (`cp -p` or
// `rsync -t` of a file of the same size, as an ECDSA certificate often
// is): a rename gives another inode, and any write in place, or a
// modification time set back, moves the change time, which no one can
// set.
type fileID struct {
	dev, ino    uint64
	size        int64
	mod, change int64 // ns
}

// statID stats name, following symbolic links.
func statID(name string) (fileID, error) {
	fi, err := os.Stat(name)
	if err != nil {
		return fileID{}, err
	}
	id := fileID{size: fi.Size(), mod: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.dev, id.ino, id.change = uint64(st.Dev), st.Ino, st.Ctim.Nano()
	}
	return id, nil
}

// newAPICertificate loads the pair the API starts with. Dates are not
// checked here: an expired certificate is served with a warning at start
// (warnCertificateDates), so that a renewal that came late does not turn
// into a crash loop.
func newAPICertificate(certFile, keyFile string, logger *slog.Logger) (*servedCertificate, error) {
	return newServedCertificate(apiPair, pairFiles{cert: certFile, key: keyFile}, logger)
}

// newServedCertificate loads the pair a server starts with, as
// newAPICertificate, and warns when it is out of its dates (served all
// the same: warnCertificateDates).
func newServedCertificate(keys pairKeys, files pairFiles, logger *slog.Logger) (*servedCertificate, error) {
	p, err := keys.load(files)
	if err != nil {
		return nil, err
	}
	warnCertificateDates(keys, p.cert.Leaf, files.cert, time.Now(), logger)
	c := &servedCertificate{keys: keys, logger: logger}
	c.cur.Store(p)
	return c, nil
}

// GetCertificate is the tls.Config hook: the pair serving now.
func (c *servedCertificate) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.cur.Load().cert, nil
}

// configForClient is the tls.Config hook of a server that asks for client
// certificates: base with the client CAs loaded now, so that a handshake
// never reads a file and a CA renewed takes over without a restart.
func (c *servedCertificate) configForClient(base *tls.Config) func(*tls.ClientHelloInfo) (*tls.Config, error) {
	return func(*tls.ClientHelloInfo) (*tls.Config, error) {
		conf := base.Clone()
		conf.GetConfigForClient = nil
		conf.ClientCAs = c.cur.Load().clientCAs
		return conf, nil
	}
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
func (c *servedCertificate) status() certStatus {
	p := c.cur.Load()
	leaf := p.cert.Leaf
	return certStatus{File: p.files.cert, Subject: leaf.Subject.String(), Serial: leaf.SerialNumber.String(),
		SerialHex: fmt.Sprintf("%X", leaf.SerialNumber), NotBefore: leaf.NotBefore.UTC(), NotAfter: leaf.NotAfter.UTC()}
}

// notAfter is the end of the certificate serving now
// (orderly_api_certificate_expiry_timestamp_seconds).
func (c *servedCertificate) notAfter() time.Time {
	return c.leaf().NotAfter
}

// leaf is the certificate serving now; nil for a server without TLS (c
// nil).
func (c *servedCertificate) leaf() *x509.Certificate {
	if c == nil {
		return nil
	}
	return c.cur.Load().cert.Leaf
}

// stampOf stats the files.
func (k pairKeys) stampOf(f pairFiles) (st fileStamp, err error) {
	if st.cert, err = statID(f.cert); err != nil {
		return fileStamp{}, fmt.Errorf("%s %s: %w", k.cert, f.cert, err)
	}
	if st.key, err = statID(f.key); err != nil {
		return fileStamp{}, fmt.Errorf("%s %s: %w", k.key, f.key, err)
	}
	if f.ca != "" {
		if st.ca, err = statID(f.ca); err != nil {
			return fileStamp{}, fmt.Errorf("%s %s: %w", k.ca, f.ca, err)
		}
	}
	return st, nil
}

// load reads and parses a pair, and its client CA file. The stamp is
// taken before the read, so a write that lands after it changes the
// stamp again and the next check reads the files anew.
func (k pairKeys) load(f pairFiles) (*servedPair, error) {
	st, err := k.stampOf(f)
	if err != nil {
		return nil, err
	}
	p := &servedPair{files: f, stamp: st}
	if p.certPEM, err = os.ReadFile(f.cert); err != nil {
		return nil, fmt.Errorf("%s %s: %w", k.cert, f.cert, err)
	}
	if p.keyPEM, err = os.ReadFile(f.key); err != nil {
		return nil, fmt.Errorf("%s %s: %w", k.key, f.key, err)
	}
	cert, err := tls.X509KeyPair(p.certPEM, p.keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s %s and %s %s: %w", k.cert, f.cert, k.key, f.key, err)
	}
	if cert.Leaf == nil {
		// GODEBUG=x509keypairleaf=0 leaves it out; the dates and the
		// log's serial need it.
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%s %s: %w", k.cert, f.cert, err)
		}
	}
	p.cert = &cert
	if f.ca != "" {
		if p.caPEM, err = os.ReadFile(f.ca); err != nil {
			return nil, fmt.Errorf("%s %s: %w", k.ca, f.ca, err)
		}
		if p.clientCAs, err = clientCAPool(k.ca, f.ca, p.caPEM); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// clientCAPool is the client CA file's certificates, every one of them:
// x509.CertPool.AppendCertsFromPEM skips what it cannot parse, so a file
// read while being written, cut inside its second certificate, gave a
// pool of the first alone, refusing every client the second signed, and
// a file of no certificate refused them all. Blocks of another type (a
// key put there by mistake) are skipped, as AppendCertsFromPEM does.
func clientCAPool(key, file string, b []byte) (*x509.CertPool, error) {
	pool, n := x509.NewCertPool(), 0
	for rest := b; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			if bytes.Contains(rest, []byte("-----BEGIN")) {
				return nil, fmt.Errorf("%s %s: a PEM block is cut short (the file is being written?)", key, file)
			}
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		ca, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", key, file, err)
		}
		pool.AddCert(ca)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("%s: %s holds no PEM certificate (-----BEGIN CERTIFICATE-----)", key, file)
	}
	return pool, nil
}

// checkDates refuses a new pair whose certificate every verifying client
// would refuse: replacing the served one with it would cut clients that
// still work.
func (p *servedPair) checkDates(certKey string, now time.Time) error {
	leaf := p.cert.Leaf
	switch {
	case leaf == nil:
	case now.After(leaf.NotAfter):
		return fmt.Errorf("%s %s: the certificate expired at %s", certKey, p.files.cert, leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return fmt.Errorf("%s %s: the certificate is not valid until %s (or this machine's clock is behind)",
			certKey, p.files.cert, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

// same reports whether p holds the files and bytes of o.
func (p *servedPair) same(o *servedPair) bool {
	return p.files == o.files && bytes.Equal(p.certPEM, o.certPEM) && bytes.Equal(p.keyPEM, o.keyPEM) &&
		bytes.Equal(p.caPEM, o.caPEM)
}

// prepare is the reload's part (a config.Preparer): the pair cfg names,
// at the same paths or new ones, is loaded and checked before anything
// changes, and refuses the whole reload if it is bad. A pair unchanged
// is not checked again, so an expired certificate served since the start
// does not refuse every later reload. Turning TLS off (no http.tls_cert)
// takes a restart (config.RestartKeys): the served pair stays; so does
// turning the client CA on or off, and the running one stays watched.
func (c *servedCertificate) prepare(_ context.Context, cfg config.Config) (func(), error) {
	files := c.keys.files(cfg)
	if files.cert == "" {
		return nil, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := c.cur.Load()
	if (files.ca == "") != (seen.files.ca == "") {
		files.ca = seen.files.ca
	}
	next, err := c.keys.load(files)
	if err != nil {
		return nil, err
	}
	if next.same(seen) {
		return nil, nil
	}
	if err := next.checkDates(c.keys.cert, time.Now()); err != nil {
		return nil, err
	}
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		// A disk check between this read and the commit took the same
		// files as they were later: committing next put the older pair
		// back until the next check, a minute.
		if cur := c.cur.Load(); cur != seen && cur.files == next.files {
			return
		}
		c.install(next, "reload")
	}, nil
}

// install serves next from the next handshake on; c.mu is held. A key
// others may read is warned of, as at start: a renewal written under
// umask 022 was taken without a word.
func (c *servedCertificate) install(next *servedPair, by string) {
	c.cur.Store(next)
	c.failed, c.unsettled = certFailure{}, certFailure{}
	leaf := next.cert.Leaf
	attrs := []any{"by", by, "setting", c.keys.cert, "file", next.files.cert, "serial", leaf.SerialNumber.String(), "not_after", leaf.NotAfter.UTC()}
	if next.files.ca != "" {
		attrs = append(attrs, "client_ca", next.files.ca)
	}
	c.logger.Info(c.keys.what+" was loaded anew; new connections get it", attrs...)
	warnKeyOthersRead(c.logger, c.keys.key, next.files.key)
}

// check loads the served files again when their stamp changed. A pair
// that does not load or is out of its dates is logged (once per change
// of the files or of the cause) and the served one stays.
func (c *servedCertificate) check(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := c.cur.Load()
	st, err := c.keys.stampOf(cur.files)
	if err == nil && st == cur.stamp {
		return
	}
	var next *servedPair
	if err == nil {
		next, err = c.keys.load(cur.files)
	}
	if err == nil && !next.same(cur) {
		err = next.checkDates(c.keys.cert, now)
	}
	if err != nil {
		f := certFailure{st, err.Error()}
		if f != c.unsettled {
			c.unsettled = f // told if the next check finds it still so
			return
		}
		if f != c.failed {
			c.logger.Error(c.keys.what+" files changed and do not load; the served certificate stays until they are mended",
				"setting", c.keys.cert, "file", cur.files.cert, "error", err)
			c.failed = f
		}
		return
	}
	c.failed, c.unsettled = certFailure{}, certFailure{}
	if next.same(cur) {
		// Touched, not changed (a renewal job that wrote the same
		// bytes): remember the stamp, serve on.
		next.cert, next.clientCAs = cur.cert, cur.clientCAs
		c.cur.Store(next)
		return
	}
	c.install(next, "file change")
}

// run checks the files every interval until ctx ends.
func (c *servedCertificate) run(ctx context.Context, every time.Duration) {
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
