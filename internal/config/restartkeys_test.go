package config

import (
	"slices"
	"testing"
)

// TestRestartKeysTLSOnlyWhenSwitched: a new HTTPS pair (another path)
// is loaded by the running API, so it is not a restart; TLS turned on or
// off is, since the listener is opened once. Before, any change of
// http.tls_cert or http.tls_key was listed in restart_required.
func TestRestartKeysTLSOnlyWhenSwitched(t *testing.T) {
	pair := func(crt, key string) Config {
		var c Config
		c.HTTP.TLSCert, c.HTTP.TLSKey = crt, key
		return c
	}
	natsPair := func(crt, key, clientCA string) Config {
		var c Config
		c.NATS.ListenTLSCert, c.NATS.ListenTLSKey, c.NATS.ListenTLSClientCA = crt, key, clientCA
		return c
	}
	for _, tc := range []struct {
		name     string
		old, cfg Config
		want     []string
	}{
		{"renewed at new paths", pair("/etc/a.crt", "/etc/a.key"), pair("/etc/b.crt", "/etc/b.key"), nil},
		{"turned on", pair("", ""), pair("/etc/b.crt", "/etc/b.key"), []string{"http.tls_cert", "http.tls_key"}},
		{"turned off", pair("/etc/a.crt", "/etc/a.key"), pair("", ""), []string{"http.tls_cert", "http.tls_key"}},
		// serve's embedded NATS: its pair and its client CA renew in
		// place; asking for client certificates or not is set at start.
		{"embedded NATS renewed at new paths", natsPair("/etc/a.crt", "/etc/a.key", ""), natsPair("/etc/b.crt", "/etc/b.key", ""), nil},
		{"embedded NATS turned on", natsPair("", "", ""), natsPair("/etc/b.crt", "/etc/b.key", ""), []string{"nats.listen_tls_cert", "nats.listen_tls_key"}},
		{"embedded NATS client CA turned on", natsPair("/etc/a.crt", "/etc/a.key", ""), natsPair("/etc/a.crt", "/etc/a.key", "/etc/ca.crt"), []string{"nats.listen_tls_client_ca"}},
		{"embedded NATS client CA turned off", natsPair("/etc/a.crt", "/etc/a.key", "/etc/ca.crt"), natsPair("/etc/a.crt", "/etc/a.key", ""), []string{"nats.listen_tls_client_ca"}},
		{"embedded NATS client CA at a new path", natsPair("/etc/a.crt", "/etc/a.key", "/etc/ca.crt"), natsPair("/etc/a.crt", "/etc/a.key", "/etc/ca-2027.crt"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys := Changed(tc.old, tc.cfg)
			if got := RestartKeys(tc.old, tc.cfg, keys); !slices.Equal(got, tc.want) {
				t.Errorf("RestartKeys of %v = %v, want %v", keys, got, tc.want)
			}
		})
	}
	// The other keys keep their classification.
	if got := RestartKeys(Config{}, Config{}, []string{"listen", "policy", "nats.url"}); !slices.Equal(got, []string{"listen", "nats.url"}) {
		t.Errorf("RestartKeys(listen, policy, nats.url) = %v", got)
	}
}
