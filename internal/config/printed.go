package config

import (
	"encoding/json"
	"fmt"
	"log/slog"
)

// The config and its nats section print with database_url's and
// nats.url's passwords and tokens hidden (RedactDSN, RedactNATS) through
// every fmt verb, slog and encoding/json, as a Secret prints "***": a
// config struct in a log line, an error or a recovered panic's message
// opens neither the database nor the bus.

type (
	redactedConfig Config
	redactedNATS   NATS
)

func (c Config) redacted() redactedConfig {
	c.DatabaseURL = RedactDSN(c.DatabaseURL)
	c.NATS.URL = RedactNATS(c.NATS.URL)
	return redactedConfig(c)
}

// Format prints the config with its URLs' secrets hidden.
func (c Config) Format(f fmt.State, verb rune) {
	fmt.Fprintf(f, fmt.FormatString(f, verb), c.redacted())
}

// LogValue is the config with its URLs' secrets hidden, for slog.
func (c Config) LogValue() slog.Value { return slog.AnyValue(c.redacted()) }

// MarshalJSON encodes the config with its URLs' secrets hidden.
func (c Config) MarshalJSON() ([]byte, error) { return json.Marshal(c.redacted()) }

func (n NATS) redacted() redactedNATS {
	n.URL = RedactNATS(n.URL)
	return redactedNATS(n)
}

// Format prints the section with nats.url's password or token hidden.
func (n NATS) Format(f fmt.State, verb rune) {
	fmt.Fprintf(f, fmt.FormatString(f, verb), n.redacted())
}

// LogValue is the section with nats.url's password or token hidden.
func (n NATS) LogValue() slog.Value { return slog.AnyValue(n.redacted()) }

// MarshalJSON encodes the section with nats.url's password or token
// hidden.
func (n NATS) MarshalJSON() ([]byte, error) { return json.Marshal(n.redacted()) }
