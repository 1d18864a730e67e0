package config

import (
	"encoding/json"
	"log/slog"
	"strconv"
)

// Secret is a config value that signs tokens (an HS256 key). It prints as
// "***" (empty when unset) through fmt's verbs, %#v included, through slog
// and through encoding/json, so a config struct that reaches a log line,
// an error or a recovered panic's message never shows the key; string(s)
// is the key itself, for the code that signs and verifies.
type Secret string

// String is "***" for a set secret, "" for an unset one.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "***"
}

// GoString is String quoted, for %#v.
func (s Secret) GoString() string { return strconv.Quote(s.String()) }

// LogValue is String, for slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON is String as a JSON string, for slog's JSON handler, which
// encodes a struct with encoding/json.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }
