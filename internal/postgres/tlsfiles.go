package postgres

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/jackc/pgservicefile"
	"github.com/jackc/pgx/v5/pgconn"
)

// tlsFiles has each new connection present the client certificate (and
// trust the CA) that database_url's sslcert, sslkey and sslrootcert name
// as the files are now. pgx reads them once, when it parses the URL: a
// running API or worker kept presenting the certificate read at start
// after the files were renewed or deleted, and once that certificate
// expired PostgreSQL refused every connection it made (after a restart
// of PostgreSQL, or one replaced after its lifetime) until the process
// restarted (docs/deploy.md, "TLS to NATS and PostgreSQL").
//
// The TLS settings come from pgx's own parse of the URL (the hook parses
// it for the password anyway), so sslmode's checks stay pgx's: the
// host's name for verify-full, the chain alone for verify-ca. They are
// taken again only when a file's inode, size or mtime changed: a
// connection otherwise keeps the configuration it would have had. A
// replacement that fails to load (half written, a key that does not
// match) keeps the last good one and is logged once, naming the files.
type tlsFiles struct {
	dsn string

	mu        sync.Mutex
	seen      string        // the files' signature when last looked at
	config    *tls.Config   // last good: the first host's
	fallbacks []*tls.Config // last good: each fallback's, in order
}

// tlsLook is the TLS files as a new connection found them: their names
// and signature.
type tlsLook struct {
	names []string
	sig   string
}

// newTLSFiles is nil when dsn names no TLS file and no service: nothing
// to re-read.
func newTLSFiles(dsn string, parsed *pgconn.Config) *tlsFiles {
	f := &tlsFiles{dsn: dsn}
	look := f.now()
	if len(look.names) == 0 {
		return nil
	}
	f.seen = look.sig
	f.keep(parsed)
	return f
}

func (f *tlsFiles) keep(c *pgconn.Config) {
	f.config = c.TLSConfig
	f.fallbacks = make([]*tls.Config, len(c.Fallbacks))
	for i, fb := range c.Fallbacks {
		f.fallbacks[i] = fb.TLSConfig
	}
}

// now is the files' names and signature, taken before the parse that
// reads them: a file replaced during the parse is taken again at the next
// connection. The names are found again each time, since a service file
// edited to name other files makes the next parse read those.
func (f *tlsFiles) now() tlsLook {
	names := tlsFileNames(f.dsn)
	return tlsLook{names: names, sig: signature(names)}
}

// apply gives cc the TLS configuration of the files as they are now:
// fresh's when they changed (look.sig) since last seen and loaded
// (parseErr nil), else the last good one.
func (f *tlsFiles) apply(cc *pgconn.Config, look tlsLook, fresh *pgconn.Config, parseErr error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if look.sig != f.seen {
		f.seen = look.sig
		if parseErr == nil && len(fresh.Fallbacks) == len(f.fallbacks) {
			f.keep(fresh)
		} else {
			slog.Error("postgresql: the TLS files of database_url did not load; new connections keep the certificate loaded before",
				"files", strings.Join(look.names, ", "), "error", RedactParseError(parseErr))
		}
	}
	if len(cc.Fallbacks) != len(f.fallbacks) {
		return
	}
	cc.TLSConfig = f.config
	for i, fb := range cc.Fallbacks {
		fb.TLSConfig = f.fallbacks[i]
	}
}

// signature identifies the files' present contents without reading
// them: a rename over a file (mv, as certificate renewers do) changes the
// inode even when it keeps size and mtime, and a write in place (cp -p
// of a file of the same size, its mtime set back) the change time, which
// no one can set.
func signature(names []string) string {
	var b strings.Builder
	for _, name := range names {
		fi, err := os.Stat(name)
		if err != nil {
			fmt.Fprintf(&b, "%s:missing;", name)
			continue
		}
		var ino uint64
		var change int64
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ino, change = st.Ino, st.Ctim.Nano()
		}
		fmt.Fprintf(&b, "%s:%d:%d:%d:%d;", name, ino, fi.Size(), fi.ModTime().UnixNano(), change)
	}
	return b.String()
}

// tlsFileNames are the files dsn (a URL or keyword=value pairs), or for
// a setting dsn leaves out its service's section of the service file
// (serviceTLSFiles), PGSSLCERT, PGSSLKEY and PGSSLROOTCERT name, else
// libpq's defaults that pgx takes too (homeTLSFiles): pgx's order. The
// service file itself comes last, as a file to look at: edited, it may
// name other files. sslrootcert=system names the system's CAs, no file.
func tlsFileNames(dsn string) []string {
	var settings map[string]string
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		settings = queryValues(dsn)
	} else {
		settings = keywordValues(dsn)
	}
	defaults := homeTLSFiles()
	serviceFile, service := serviceTLSFiles(settings)
	var names []string
	for _, key := range []string{"sslcert", "sslkey", "sslrootcert"} {
		name, ok := settings[key]
		if !ok {
			name, ok = service[key]
		}
		if !ok {
			name = os.Getenv("PG" + strings.ToUpper(key))
		}
		if !ok && name == "" {
			name = defaults[key]
		}
		if name != "" && !(key == "sslrootcert" && name == "system") {
			names = append(names, name)
		}
	}
	if serviceFile != "" {
		names = append(names, serviceFile)
	}
	return names
}

// serviceTLSFiles is the service file and the TLS settings of the
// section of it that dsn's settings (service=, else PGSERVICE) name, as
// pgx reads them: the file of servicefile=, else PGSERVICEFILE, else
// ~/.pg_service.conf. Left out, a client certificate renewed at the paths
// a service names was never taken, as the home directory's were not
// (TestNewConnectionsPresentTheRenewedCertificateOfAService). "" and nil
// when no service is named; a file that does not read, or lacks the
// section, gives no setting (pgx's parse then fails with its own error).
func serviceTLSFiles(settings map[string]string) (file string, tlsSettings map[string]string) {
	name, ok := settings["service"]
	if !ok {
		name = os.Getenv("PGSERVICE")
	}
	if name == "" {
		return "", nil
	}
	file, ok = settings["servicefile"]
	if !ok {
		file = os.Getenv("PGSERVICEFILE")
	}
	if file == "" {
		home, err := os.UserHomeDir() // as pgx's
		if err != nil {
			return "", nil
		}
		file = filepath.Join(home, ".pg_service.conf")
	}
	sf, err := pgservicefile.ReadServicefile(file)
	if err != nil {
		return file, nil
	}
	s, err := sf.GetService(name)
	if err != nil {
		return file, nil
	}
	tlsSettings = map[string]string{}
	for _, key := range []string{"sslcert", "sslkey", "sslrootcert"} {
		if v, ok := s.Settings[key]; ok {
			tlsSettings[key] = v
		}
	}
	return file, tlsSettings
}

// keywordValues reads dsn's keyword=value pairs as libpq (and pgx) do:
// blanks around "=", a value quoted with ' holding blanks, a backslash
// taking the next character as it is (\' and \\, or a blank in a value
// not quoted). Splitting on blanks missed sslcert='/etc/my certs/c.crt':
// its connections kept the certificate of the start after a renewal. A
// string pgx would refuse gives what was read before the fault; pgx's
// parse then fails the start with its own error.
func keywordValues(dsn string) map[string]string {
	settings := map[string]string{}
	const blanks = " \t\n\r\v\f"
	s := strings.TrimLeft(dsn, blanks)
	for s != "" {
		key, rest, ok := strings.Cut(s, "=")
		if !ok {
			break
		}
		s = strings.TrimLeft(rest, blanks)
		quoted := strings.HasPrefix(s, "'")
		if quoted {
			s = s[1:]
		}
		var val strings.Builder
		i := 0
		for ; i < len(s); i++ {
			c := s[i]
			if quoted && c == '\'' || !quoted && strings.IndexByte(blanks, c) >= 0 {
				break
			}
			if c == '\\' {
				if i++; i == len(s) {
					break // a trailing backslash: libpq drops it
				}
				c = s[i]
			}
			val.WriteByte(c)
		}
		if quoted {
			if i == len(s) {
				break // unterminated: pgx refuses the string
			}
			i++ // the closing quote
		}
		settings[strings.TrimSpace(key)] = val.String()
		s = strings.TrimLeft(s[i:], blanks)
	}
	return settings
}

// queryValues reads the query of a postgres:// URL as libpq (and pgx,
// whose parser is libpq's) do, not as net/url does: the query starts at
// the first "?" after the user and password (an "@" before any "/" ends
// them); pairs are split on "&" alone; "+" is a plus, "#" a character of
// the value, not a fragment; %XX is decoded and blanks around a value
// skipped. net/url read sslcert=/etc/pg+tls/c.crt as "/etc/pg tls/c.crt",
// dropped a pair with a ";", and cut the query at a "#" (in a path, or
// in the password before it): the process looked at files that do not
// exist, and took no renewal of the ones pgx read. A pair pgx would
// refuse ends the reading; pgx's parse then fails the start.
func queryValues(dsn string) map[string]string {
	settings := map[string]string{}
	_, p, _ := strings.Cut(dsn, "://")
	if i := strings.IndexAny(p, "@/"); i >= 0 && p[i] == '@' {
		p = p[i+1:]
	}
	_, query, ok := strings.Cut(p, "?")
	if !ok {
		return settings
	}
	for pair := range strings.SplitSeq(query, "&") {
		rawKey, rawVal, ok := strings.Cut(pair, "=")
		if !ok || strings.Contains(rawVal, "=") {
			break
		}
		key, kok := uriDecode(rawKey)
		val, vok := uriDecode(rawVal)
		if !kok || !vok {
			break
		}
		settings[key] = val
	}
	return settings
}

// uriDecode is libpq's decoding of a URL's part: blanks around it
// skipped, %XX decoded ("+" kept); a blank inside, a bad escape or a NUL
// is refused.
func uriDecode(raw string) (string, bool) {
	raw = strings.Trim(raw, " ")
	if strings.Contains(raw, " ") {
		return "", false
	}
	v, err := url.PathUnescape(raw)
	return v, err == nil && !strings.Contains(v, "\x00")
}

// homeTLSFiles are the TLS files of libpq's defaults that exist, by
// setting, as pgx's parse takes them for a setting neither the URL nor
// the environment gives: ~/.postgresql/postgresql.crt with
// postgresql.key (both, or neither), and root.crt. Left out, a client
// certificate renewed there was never taken (no file to look at): the
// process presented the one of its start until that one expired and
// PostgreSQL refused every new connection
// (TestNewConnectionsPresentTheRenewedCertificateOfTheHomeDirectory).
func homeTLSFiles() map[string]string {
	out := map[string]string{}
	home, err := os.UserHomeDir() // $HOME, as pgx's
	if err != nil {
		return out
	}
	dir := filepath.Join(home, ".postgresql")
	exists := func(name string) bool { _, err := os.Stat(name); return err == nil }
	if crt, key := filepath.Join(dir, "postgresql.crt"), filepath.Join(dir, "postgresql.key"); exists(crt) && exists(key) {
		out["sslcert"], out["sslkey"] = crt, key
	}
	if root := filepath.Join(dir, "root.crt"); exists(root) {
		out["sslrootcert"] = root
	}
	return out
}
