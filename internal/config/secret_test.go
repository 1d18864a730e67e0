package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// TestSecretsNeverPrint: a config struct that reaches a log line, an
// error or a recovered panic's message (chi's Recoverer and the compat
// surfaces' print the value with fmt) showed the HS256 keys and the
// database's and the bus's passwords as they are: every fmt verb, slog's
// text and JSON handlers and encoding/json print them as "***" now,
// while string(s) and the loaded values stay what they are.
func TestSecretsNeverPrint(t *testing.T) {
	const key, prev, stage0 = "Sec4etNativeSec4etNativeSec4etNat", "Sec4etPreviousSec4etPreviousSec4", "Sec4etStage0Sec4etStage0Sec4etSt"
	const dbPass, natsPass = "Sec4etDBpass", "Sec4etNATSpass"
	cfg := Default()
	cfg.Auth.JWT.Secret, cfg.Auth.JWT.PreviousSecret, cfg.Compat.Stage0.JWTSecret = key, prev, stage0
	cfg.DatabaseURL = "postgres://orderly:" + dbPass + "@db:5432/orderly"
	cfg.NATS.URL = "nats://api:" + natsPass + "@n1:4222"
	var printed []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
		printed = append(printed, fmt.Sprintf(verb, cfg), fmt.Sprintf(verb, &cfg), fmt.Sprintf(verb, cfg.Auth),
			fmt.Sprintf(verb, &cfg.Compat.Stage0), fmt.Sprintf(verb, cfg.NATS))
	}
	for _, h := range []func(*bytes.Buffer) slog.Handler{
		func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var b bytes.Buffer
		slog.New(h(&b)).Info("config", "config", cfg, "nats", cfg.NATS, "jwt", cfg.Auth.JWT, "secret", cfg.Auth.JWT.Secret,
			"in", struct{ C Config }{cfg})
		printed = append(printed, b.String())
	}
	j, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	printed = append(printed, string(j), func() (s string) {
		defer func() { s = fmt.Sprint(recover()) }()
		panic(cfg)
	}())
	for _, p := range printed {
		for _, s := range []string{key, prev, stage0, dbPass, natsPass} {
			if strings.Contains(p, s) {
				t.Errorf("a secret printed: %s", p)
			}
		}
		if !strings.Contains(p, "***") {
			t.Errorf("printed without the secrets' mark: %s", p)
		}
	}
	if !strings.Contains(printed[0], "postgres://orderly:***@db:5432/orderly") || !strings.Contains(printed[0], "nats://api:***@n1:4222") {
		t.Errorf("the URLs are not printed with their passwords hidden: %s", printed[0])
	}
	if string(cfg.Auth.JWT.Secret) != key || fmt.Sprint(Secret("")) != "" {
		t.Errorf("string(Secret) = %q, the empty Secret prints %q", cfg.Auth.JWT.Secret, Secret(""))
	}
}
