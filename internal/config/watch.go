package config

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Watcher holds the running configuration and replaces it only on an
// explicit Reload (DESIGN §4.7). Unlike Vigrid, whose tamper check blocks
// its own reload, a changed file never stops the service: it keeps the
// loaded config, reports the drift, and a reload applies the new file if it
// is valid.
type Watcher struct {
	path      string
	environ   []string
	overrides map[string]any
	// fill completes every config loaded, before it is validated (see
	// NewWatcherFilled); nil for none.
	fill func(*Config)
	// logger is swappable because the process's logger is built from the
	// config this Watcher loads (SetLogger).
	logger atomic.Pointer[slog.Logger]

	// cur is read on every request, so it is a lock-free pointer swap.
	cur atomic.Pointer[Config]

	// reloadMu serializes reloads so preparers and subscribers see
	// configs in order.
	reloadMu sync.Mutex

	mu     sync.Mutex // guards the fields below
	loaded Loaded
	// file is the config the file alone makes (fileLayer), for a reload
	// to tell an edit that a flag or a variable overrides; fileOK is false
	// without a file or when it did not load alone.
	file         Config
	fileOK       bool
	loadedAt     time.Time
	preparers    []namedPreparer
	checks       []namedCheck
	subs         []func(Config)
	diskSHA      string
	drift        bool
	driftReason  string
	pendingSHA   string // on-disk hash pendingError was computed for
	pendingError string
	checkedAt    time.Time
	reloadAt     time.Time
	reloadError  string
	// restartConfirms: no API here to confirm a reload with.
	restartConfirms bool
}

// Status is what /v1/status and /readyz report about the configuration.
type Status struct {
	Path            string    `json:"path"`
	SHA256Loaded    string    `json:"sha256_loaded"`
	SHA256OnDisk    string    `json:"sha256_on_disk"`
	Drift           bool      `json:"drift"`
	DriftReason     string    `json:"drift_reason,omitempty"`
	PendingError    string    `json:"pending_error,omitempty"` // why the file on disk would be refused
	LoadedAt        time.Time `json:"loaded_at"`
	CheckedAt       time.Time `json:"checked_at"`
	LastReload      time.Time `json:"last_reload,omitzero"`
	LastReloadError string    `json:"last_reload_error,omitempty"`
}

// NewWatcher loads and validates the configuration once; an invalid one
// is an error, since there is nothing older to fall back to. environ and
// overrides are kept and re-applied on every reload.
func NewWatcher(path string, environ []string, overrides map[string]any, logger *slog.Logger) (*Watcher, error) {
	return NewWatcherFilled(path, environ, overrides, logger, nil)
}

// NewWatcherFilled is NewWatcher whose every load, the first, a reload's
// and the drift check's, is passed to fill before it is validated: what
// the process supplies itself where the config names nothing (orderly
// serve's host for the compat surfaces, DefaultCompatHosts).
func NewWatcherFilled(path string, environ []string, overrides map[string]any, logger *slog.Logger, fill func(*Config)) (*Watcher, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{
		path:      path,
		environ:   slices.Clone(environ),
		overrides: maps.Clone(overrides),
		fill:      fill,
	}
	w.logger.Store(logger)
	cfg, l, err := Load(path, w.environ, w.overrides)
	if err != nil {
		return nil, err
	}
	if err := w.validate(&cfg); err != nil {
		return nil, fmt.Errorf("config %s: %w", displayPath(path), err)
	}
	now := time.Now()
	w.cur.Store(&cfg)
	w.loaded, w.loadedAt = l, now
	w.file, w.fileOK = w.fileLayer()
	w.diskSHA, w.checkedAt = l.SHA256, now
	return w, nil
}

// fileLayer is the config the file makes over the defaults, without the
// environment and the flags; ok is false without a file or when it does
// not load alone.
func (w *Watcher) fileLayer() (cfg Config, ok bool) {
	if w.path == "" {
		return Config{}, false
	}
	cfg, _, err := Load(w.path, nil, nil)
	return cfg, err == nil
}

// validate validates a config the watcher loaded, once its fill (if it
// has one) completed it.
func (w *Watcher) validate(cfg *Config) error {
	if w.fill != nil {
		w.fill(cfg)
	}
	return cfg.Validate()
}

// SetLogger replaces the logger, once the process has built its own from
// the configuration this Watcher loaded.
func (w *Watcher) SetLogger(l *slog.Logger) {
	if l != nil {
		w.logger.Store(l)
	}
}

// Current returns the running configuration. It is cheap enough for the
// hot path; callers must treat the slices in it as read-only.
func (w *Watcher) Current() Config { return *w.cur.Load() }

// Loaded returns where the running configuration came from.
func (w *Watcher) Loaded() Loaded {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.loaded
}

// Drift reports whether the file on disk differed from the loaded one at
// the last check, and why. Run (or Check) keeps it current.
func (w *Watcher) Drift() (bool, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.drift, w.driftReason
}

// Check hashes the file on disk now and compares it with the loaded one.
// When they differ it also tries the new file, so the status can say in
// advance whether a reload would be refused (invalid, empty, removing a
// part of the security setup without confirmation, or refused by a part's
// check, such as actions that do not compile; the preparers are not run,
// so a bad key file shows only when a reload tries it). Transitions are
// logged.
func (w *Watcher) Check() (bool, string) {
	if w.path == "" {
		return false, ""
	}
	data, readErr := os.ReadFile(w.path)
	disk := ""
	if readErr == nil {
		disk = hashBytes(data)
	}

	w.mu.Lock()
	loaded := w.loaded.SHA256
	pendingSHA, pendingError := w.pendingSHA, w.pendingError
	w.mu.Unlock()

	drift, reason := false, ""
	switch {
	case readErr != nil:
		drift, reason = true, fmt.Sprintf("config file unreadable: %v", readErr)
		pendingSHA, pendingError = "", ""
	case disk != loaded:
		drift = true
		reason = fmt.Sprintf("config file changed on disk (sha256 %s, loaded %s); serving the loaded config until reload", short(disk), short(loaded))
		if disk != pendingSHA {
			pendingSHA, pendingError = disk, ""
			cfg, empty, err := buildFile(w.path, data, w.environ, w.overrides)
			if err == nil {
				err = w.validate(&cfg)
			}
			if err == nil {
				// What a reload without confirmation would refuse.
				err = w.guard(w.Current(), cfg, Loaded{SHA256: disk, Empty: empty}, w.Loaded().Empty, "")
			}
			if err == nil {
				err = w.check(cfg)
			}
			if err != nil {
				pendingError = err.Error()
			}
		}
	default:
		pendingSHA, pendingError = "", ""
	}

	w.mu.Lock()
	// A reload may have finished while the file was read; its result wins.
	if w.loaded.SHA256 != loaded {
		w.mu.Unlock()
		return w.Drift()
	}
	was := w.drift
	w.diskSHA, w.checkedAt = disk, time.Now()
	w.drift, w.driftReason = drift, reason
	w.pendingSHA, w.pendingError = pendingSHA, pendingError
	w.mu.Unlock()

	switch {
	case drift && !was:
		w.logger.Load().Warn("config drift", "path", w.path, "reason", reason, "sha256_loaded", loaded, "sha256_on_disk", disk, "pending_error", pendingError)
	case !drift && was:
		w.logger.Load().Info("config drift cleared: file matches the loaded config again", "path", w.path, "sha256", loaded)
	}
	return drift, reason
}

// Run checks the file for drift every config_check_interval (read from the
// current config, so a reload can change it) until ctx is done. It returns
// nil on cancellation, which is a normal shutdown.
func (w *Watcher) Run(ctx context.Context) error {
	if w.path == "" {
		<-ctx.Done()
		return nil
	}
	for {
		t := time.NewTimer(w.Current().ConfigCheckInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		w.Check()
	}
}

// Status returns a snapshot of the config's provenance and integrity.
func (w *Watcher) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	return Status{
		Path:            w.path,
		SHA256Loaded:    w.loaded.SHA256,
		SHA256OnDisk:    w.diskSHA,
		Drift:           w.drift,
		DriftReason:     w.driftReason,
		PendingError:    w.pendingError,
		LoadedAt:        w.loadedAt,
		CheckedAt:       w.checkedAt,
		LastReload:      w.reloadAt,
		LastReloadError: w.reloadError,
	}
}

// Changed lists the keys (koanf paths such as "nats.url" or "policy")
// whose values differ between a and b, for logs and subscribers that only
// rebuild what changed. A nil and an empty list are equal.
func Changed(a, b Config) []string {
	var keys []string
	diff(reflect.ValueOf(a), reflect.ValueOf(b), "", &keys)
	return keys
}

// diff appends to keys the paths of fields that differ between a and b.
func diff(a, b reflect.Value, prefix string, keys *[]string) {
	t := a.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		key := prefix + f.Tag.Get("koanf")
		av, bv := a.Field(i), b.Field(i)
		switch {
		case isSection(f.Type):
			diff(av, bv, key+".", keys)
		case f.Type.Kind() == reflect.Slice && av.Len() == 0 && bv.Len() == 0:
		case !reflect.DeepEqual(av.Interface(), bv.Interface()):
			*keys = append(*keys, key)
		}
	}
}

// RequiresRestart reports whether a change to key only takes effect when
// the process restarts, because it is read once to open a listener, a
// store or a connection. Reload still accepts such changes and warns.
func RequiresRestart(key string) bool {
	switch key {
	case "data_dir", "listen", "host", "database_url", "log.format", "log.syslog_address", "log.syslog_facility",
		"http.read_timeout", "http.write_timeout",
		// The worker takes its grace when it starts, and its metrics
		// listener is opened once.
		"worker.shutdown_grace", "worker.metrics_listen",
		// A compat surface is mounted at start (turning one off applies
		// at once, but on or moved takes a restart).
		"compat.httpexec.enabled", "compat.httpexec.prefix", "compat.vigrid.enabled", "compat.vigrid.prefix",
		"compat.stage0.enabled", "compat.stage0.prefix":
		return true
	}
	// serve's embedded NATS reloads its users (nats.workers) in place.
	return strings.HasPrefix(key, "nats.") && key != "nats.workers"
}

// RestartKeys is the part of keys, changed from old to cfg, that takes
// effect only after a restart: RequiresRestart's keys, and
// http.tls_cert/http.tls_key when TLS is turned on or off (the listener
// is opened once), and nats.listen_tls_cert/nats.listen_tls_key likewise,
// and nats.listen_tls_client_ca when it is turned on or off (the server
// asks for client certificates or not from its start). A new pair or
// client CA at the same or another path is loaded at the reload
// (cmd/orderly's servedCertificate), so a renewal needs no restart.
func RestartKeys(old, cfg Config, keys []string) []string {
	tlsSwitched := (old.HTTP.TLSCert == "") != (cfg.HTTP.TLSCert == "")
	// serve's embedded NATS serves its pair the same way (its TLS is set
	// when the server starts; the pair is read again at a reload).
	natsTLSSwitched := (old.NATS.ListenTLSCert == "") != (cfg.NATS.ListenTLSCert == "")
	clientCASwitched := (old.NATS.ListenTLSClientCA == "") != (cfg.NATS.ListenTLSClientCA == "")
	var out []string
	for _, k := range keys {
		switch k {
		case "http.tls_cert", "http.tls_key":
			if tlsSwitched {
				out = append(out, k)
			}
		case "nats.listen_tls_cert", "nats.listen_tls_key":
			if natsTLSSwitched {
				out = append(out, k)
			}
		case "nats.listen_tls_client_ca":
			if natsTLSSwitched || clientCASwitched {
				out = append(out, k)
			}
		default:
			if RequiresRestart(k) {
				out = append(out, k)
			}
		}
	}
	return out
}

// displayPath names the config source in errors.
func displayPath(p string) string {
	if p == "" {
		return "(no file)"
	}
	return p
}

// short abbreviates a hex hash for human-readable messages.
func short(sha string) string {
	if sha == "" {
		return "(none)"
	}
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
