package config

import (
	"net/url"
	"regexp"
	"strings"
)

// RedactDSN hides a password in a database URL (user:password@ or
// ?password=) or keyword/value string (password=…) for printing, and the
// client key's passphrase (sslpassword) in either; of a postgres:// URL
// whose part before the query does not parse as one with a user (a
// password with an unescaped / or %), everything before its last @.
//
// The string is cut where libpq (and pgx, whose parser is libpq's) cuts
// it, not where net/url does: a URL's query starts at the first "?"
// after its user part (which ends at the first @ before any /), and
// splits on "&" alone, ";" and "#" being characters of a value. Read by
// net/url, ?password=s3c;ret was printed whole (the pair dropped),
// ?password=s3c#ret as password=***#ret, and a "?" in the user part's
// password hid the query's password behind it.
func RedactDSN(dsn string) string {
	if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
		if u, err := url.Parse(dsn); err == nil && u.Scheme != "" && u.User != nil {
			return redactURLUser(dsn) // another scheme (a typo): pgx takes none, but it may hold a password
		}
		return keywordPassword.ReplaceAllString(dsn, "${1}***")
	}
	rest := dsn[strings.Index(dsn, "://")+len("://"):]
	if i := strings.IndexAny(rest, "@/"); i >= 0 && rest[i] == '@' {
		rest = rest[i+1:]
	}
	head, query := dsn, ""
	if i := strings.IndexByte(rest, '?'); i >= 0 {
		cut := len(dsn) - len(rest) + i
		head, query = dsn[:cut], dsn[cut:]
	}
	return redactURLUser(head) + redactQuery(query)
}

// redactURLUser hides the password of head, a postgres:// URL without
// its query.
func redactURLUser(head string) string {
	u, err := url.Parse(head)
	// One without a user but with an @ parsed as a host and a path
	// (postgres://orderly:12/s3cret@db).
	if err != nil || u.User == nil && strings.Contains(head, "@") {
		return RedactUnparsed(head, "***")
	}
	if _, set := u.User.Password(); !set {
		return head
	}
	u.User = url.UserPassword(u.User.Username(), "***")
	return strings.Replace(u.String(), ":%2A%2A%2A@", ":***@", 1)
}

// redactQuery hides the values of password and sslpassword in query, a
// URL's "?" and what follows, as it was written. A key that does not
// decode has its value hidden too: pgx refuses it, and it may be either.
func redactQuery(query string) string {
	if query == "" {
		return ""
	}
	pairs := strings.Split(query[1:], "&")
	for i, pair := range pairs {
		raw, _, ok := strings.Cut(pair, "=")
		key, err := url.PathUnescape(strings.Trim(raw, " "))
		if ok && (err != nil || key == "password" || key == "sslpassword") {
			pairs[i] = raw + "=***"
		}
	}
	return "?" + strings.Join(pairs, "&")
}

// keywordPassword is a password in a keyword/value connection string:
// quoted (to the end of the string when its quote is not closed), or a
// run of characters that are not blanks, a backslash taking the next one
// whatever it is, as libpq reads it (password=s3c\ ret is "s3c ret").
var keywordPassword = regexp.MustCompile(`(password\s*=\s*)('(?:[^'\\]|\\[\s\S])*(?:'|$)|(?:[^\s\\]|\\[\s\S])+)`)

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
