package config

import (
	"net/url"
	"regexp"
	"strings"
)

// RedactDSN hides a password in a database URL (user:password@ or
// ?password=) or keyword/value string (password=…) for printing, and the
// client key's passphrase (sslpassword) in either; of a postgres:// URL
// that does not parse as one with a user (a password with an unescaped
// / or %), everything before its last @.
func RedactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	// One without a user but with an @ parsed as a host and a path
	// (postgres://orderly:12/s3cret@db); one without either may still
	// have a password in its query.
	if (err != nil || u.User == nil && strings.Contains(dsn, "@")) && (strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")) {
		return RedactUnparsed(dsn, "***")
	}
	if err == nil && u.Scheme != "" {
		_, inUser := u.User.Password()
		q := u.Query()
		inQuery := q.Has("password") || q.Has("sslpassword")
		if !inUser && !inQuery {
			return dsn
		}
		if inUser {
			u.User = url.UserPassword(u.User.Username(), "***")
		}
		if inQuery {
			for _, k := range []string{"password", "sslpassword"} {
				if q.Has(k) {
					q.Set(k, "***")
				}
			}
			u.RawQuery = q.Encode()
		}
		return strings.NewReplacer(":%2A%2A%2A@", ":***@", "%2A%2A%2A", "***").Replace(u.String())
	}
	return keywordPassword.ReplaceAllString(dsn, "${1}***")
}

// keywordPassword is a password in a keyword/value connection string,
// quoted or not.
var keywordPassword = regexp.MustCompile(`(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// RedactNATS hides the credentials of a NATS URL list: a user's password,
// or a token (nats://TOKEN@host) whole; of a URL that does not parse,
// everything before its last @.
func RedactNATS(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil || u.User == nil {
			parts[i] = RedactUnparsed(p, "***")
			continue
		}
		if _, set := u.User.Password(); set {
			u.User = url.UserPassword(u.User.Username(), "***")
		} else {
			u.User = url.User("***")
		}
		parts[i] = strings.NewReplacer(":%2A%2A%2A@", ":***@", "%2A%2A%2A@", "***@").Replace(u.String())
	}
	return strings.Join(parts, ",")
}

// RedactUnparsed replaces what may be a user, password or token in a URL
// that net/url could not read as having one with mask: everything between
// "scheme://" (or the start) and the last @, which is where NATS and
// PostgreSQL end the user information. A string without @ is returned
// as it is.
func RedactUnparsed(raw, mask string) string {
	at := strings.LastIndex(raw, "@")
	if at < 0 {
		return raw
	}
	start := strings.Index(raw, "://")
	if start < 0 || start > at {
		start = 0
	} else {
		start += len("://")
	}
	return raw[:start] + mask + raw[at:]
}
