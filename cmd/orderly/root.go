package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/orderly-run/orderly/internal/config"
	"github.com/orderly-run/orderly/internal/logging"
)

// app carries what the process was given: environment and standard streams.
type app struct {
	environ []string
	stdin   io.Reader
	stdout  io.Writer
	stderr  io.Writer
	// logger is the server commands' logger once load built it, so that
	// the error that ends the command comes out in the same format.
	logger *slog.Logger
	// hup receives SIGHUP from the moment a server command loads its
	// config: its default action ends the process, and a reload asked for
	// during a long start (initdb, waiting for PostgreSQL or NATS) must
	// not. waitForSignals acts on it once the server runs.
	hup chan os.Signal
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "orderly",
		Short:         "Run commands on a fleet of hosts, safely and in order",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       binaryVersion(),
	}
	// --version prints what `orderly version` prints.
	root.SetVersionTemplate(strings.ReplaceAll(currentBuildFacts().text(), "{{", "{{`{{`}}"))
	root.AddCommand(a.serveCommand(), a.apiCommand(), a.workerCommand(), a.migrateCommand(), a.tokenCommand(), a.importCommand(),
		a.actionCommand(), a.runbookCommand(), a.fleetCommand(), a.natsAuthCommand(), a.versionCommand())
	root.AddCommand(a.clientCommands()...)
	usageOnArgs(root)
	root.SetFlagErrorFunc(durationFlagError)
	return root
}

// durationFlagError says what a duration flag takes when its value is
// not one (every command's, --timeout, --expires-in, --retry-for):
// time.ParseDuration's "missing unit in duration "5"" named the problem,
// not what to send. Other flag errors are passed on as they are.
func durationFlagError(_ *cobra.Command, err error) error {
	var ive *pflag.InvalidValueError
	if !errors.As(err, &ive) || ive.GetFlag() == nil || ive.GetFlag().Value.Type() != "duration" {
		return err
	}
	v := ive.GetValue()
	if _, perr := time.ParseDuration(v); perr == nil {
		return err // a duration the flag itself refused (a negative --retry-for)
	}
	name := "--" + ive.GetFlag().Name
	if bareNumber.MatchString(v) {
		return fmt.Errorf("%s %s: a duration needs a unit: %ss (seconds), %sm (minutes) or %sh (hours)", name, v, v, v, v)
	}
	return fmt.Errorf("%s %q is not a duration: give a number and a unit, such as 30s, 10m or 1h30m", name, v)
}

// bareNumber is a number as time.ParseDuration reads one, without its unit.
var bareNumber = regexp.MustCompile(`^[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)$`)

// usageOnArgs makes a wrong number of arguments say what the command
// takes: usage is silenced, and cobra's "accepts 1 arg(s), received 0"
// named neither the argument nor how to give it. A required flag left
// out, or two flags that exclude each other, are said the same way
// (flagRules), before cobra's own check would say them in its words.
func usageOnArgs(cmd *cobra.Command) {
	if check := cmd.Args; check != nil {
		cmd.Args = func(c *cobra.Command, args []string) error {
			if err := check(c, args); err != nil {
				return fmt.Errorf("%w; usage: %s", err, c.UseLine())
			}
			return nil
		}
	}
	// cobra runs PreRunE (and then not PreRun) right before it checks the
	// flags; no command of ours sets either.
	if cmd.Runnable() && cmd.PreRun == nil {
		next := cmd.PreRunE
		cmd.PreRunE = func(c *cobra.Command, args []string) error {
			if err := flagRules(c); err != nil {
				return fmt.Errorf("%w; usage: %s", err, c.UseLine())
			}
			if next != nil {
				return next(c, args)
			}
			return nil
		}
	}
	for _, sub := range cmd.Commands() {
		usageOnArgs(sub)
	}
}

// The annotations cobra's MarkFlagsOneRequired and
// MarkFlagsMutuallyExclusive put on each flag of a group (cobra's
// flag_groups.go), the group's names joined by a space.
const (
	cobraOneRequired       = "cobra_annotation_one_required"
	cobraMutuallyExclusive = "cobra_annotation_mutually_exclusive"
)

// flagRules checks what MarkFlagRequired and the flag groups ask, as
// cobra does after PreRunE, but names the flags as they are typed:
// cobra said `required flag(s) "host" not set` and `at least one of the
// flags in the group [host hosts] is required`, which a newcomer who
// typed `orderly submit uname` has to translate into --host. A rule this
// does not know (a group kind cobra adds) is cobra's own check's, whose
// words then come with the usage line.
func flagRules(c *cobra.Command) error {
	fs := c.Flags()
	var missing []string
	fs.VisitAll(func(f *pflag.Flag) {
		if v := f.Annotations[cobra.BashCompOneRequiredFlag]; len(v) == 1 && v[0] == "true" && !f.Changed {
			missing = append(missing, "--"+f.Name)
		}
	})
	if len(missing) > 0 {
		verb := "is"
		if len(missing) > 1 {
			verb = "are"
		}
		return fmt.Errorf("%s %s required", strings.Join(missing, " and "), verb)
	}
	var err error
	judged := map[string]bool{}
	fs.VisitAll(func(f *pflag.Flag) {
		for _, kind := range []string{cobraOneRequired, cobraMutuallyExclusive} {
			for _, group := range f.Annotations[kind] {
				if err != nil || judged[kind+group] {
					continue
				}
				judged[kind+group] = true
				var names, set []string
				for _, name := range strings.Fields(group) {
					names = append(names, "--"+name)
					if g := fs.Lookup(name); g != nil && g.Changed {
						set = append(set, "--"+name)
					}
				}
				switch {
				case kind == cobraOneRequired && len(set) == 0:
					err = fmt.Errorf("%s is required", strings.Join(names, " or "))
				case kind == cobraMutuallyExclusive && len(set) > 1:
					err = fmt.Errorf("%s cannot be given together: give one", strings.Join(set, " and "))
				}
			}
		}
	})
	if err != nil {
		return err
	}
	if err := c.ValidateRequiredFlags(); err != nil {
		return err
	}
	return c.ValidateFlagGroups()
}

// serverFlags are the flags shared by serve, api, worker and migrate. Each
// is a config override keyed by its koanf path, applied only when set.
type serverFlags struct {
	configPath string
	values     map[string]*string
}

func (f *serverFlags) bind(cmd *cobra.Command, keys ...string) {
	cmd.Flags().StringVar(&f.configPath, "config", "", "config file (YAML or TOML)")
	f.values = map[string]*string{}
	help := map[string]string{
		"data_dir":     "directory for the managed PostgreSQL, embedded NATS and admin token (default ./data)",
		"listen":       "API listen address (default 127.0.0.1:8080)",
		"host":         "host id of this machine's worker (default: the short hostname)",
		"database_url": "PostgreSQL URL (default: a managed local PostgreSQL under the data dir)",
		"nats.url":     "NATS URL (default: an embedded nats-server, its store under the data dir)",
		"nats.nkey":    "file with this process's NATS nkey seed (serve writes them in <data-dir>/nats-creds/)",
		"nats.workers": "extra worker host ids serve's embedded NATS issues credentials for (comma-separated)",
	}
	if cmd.Name() != "serve" {
		// Only serve has a managed PostgreSQL and an embedded NATS to fall
		// back on: `api --help` said "default for serve", and a newcomer
		// read a default where there is none.
		help["database_url"] = "PostgreSQL URL (required: this, database_url in --config or ORDERLY_DATABASE_URL; orderly serve prints the URL of its own at start)"
		help["nats.url"] = "NATS URL (required: this, nats.url in --config or ORDERLY_NATS__URL; orderly serve prints its own at start)"
	}
	for _, k := range keys {
		v := new(string)
		f.values[k] = v
		cmd.Flags().StringVar(v, strings.ReplaceAll(strings.ReplaceAll(k, ".", "-"), "_", "-"), "", help[k])
	}
}

func (f *serverFlags) overrides(cmd *cobra.Command) map[string]any {
	o := map[string]any{}
	for k, v := range f.values {
		name := strings.ReplaceAll(strings.ReplaceAll(k, ".", "-"), "_", "-")
		if cmd.Flags().Changed(name) {
			o[k] = *v
		}
	}
	return o
}

// load reads the configuration and builds the logger it asks for. The
// logger is also the Watcher's, takes log.level changes on reload, and
// becomes slog's default so that libraries logging through the standard
// log package come out in the same format (one JSON object per line with
// log.format json). fill, when not nil, completes every config loaded
// before it is validated (config.NewWatcherFilled).
func (a *app) load(cmd *cobra.Command, f *serverFlags, fill func(*config.Config)) (*config.Watcher, *slog.Logger, error) {
	if a.hup == nil {
		a.hup = make(chan os.Signal, 1)
		signal.Notify(a.hup, syscall.SIGHUP)
	}
	w, err := config.NewWatcherFilled(f.configPath, a.environ, f.overrides(cmd), nil, fill)
	if err != nil {
		return nil, nil, err
	}
	l, err := newLogger(w.Current().Log, a.stderr)
	if err != nil {
		return nil, nil, err
	}
	w.SetLogger(l.Logger)
	a.logger = l.Logger
	w.Subscribe(func(c config.Config) { l.SetLevel(c.Log.Level) })
	slog.SetDefault(l.Logger)
	if keys := secretsReadableByOthers(f.configPath); len(keys) > 0 {
		l.Logger.Warn("the config file holds secrets and every local user may read it: chmod 600 (or 640 to the service's group) it, or give them in the environment (security.md)",
			"path", f.configPath, "keys", keys)
	}
	for _, key := range []struct{ name, path string }{{"nats.nkey", w.Current().NATS.Nkey}, {"nats.credentials", w.Current().NATS.Credentials}} {
		if st, err := os.Stat(key.path); key.path != "" && err == nil && st.Mode().Perm()&0o004 != 0 {
			l.Logger.Warn("the NATS seed file may be read by every local user, who can then connect as this process's role: chmod 600 it (security.md)",
				"key", key.name, "path", key.path, "mode", fmt.Sprintf("%o", st.Mode().Perm()))
		}
	}
	warnKeyOthersRead(l.Logger, "nats.tls_key", w.Current().NATS.TLSKey)
	warnKeyOthersRead(l.Logger, "http.tls_key", w.Current().HTTP.TLSKey)
	warnKeyOthersRead(l.Logger, "nats.listen_tls_key", w.Current().NATS.ListenTLSKey)
	for _, flag := range secretFlags(f.overrides(cmd)) {
		l.Logger.Warn("a password is on the command line: every local user, and every order this machine runs, reads it in /proc/<pid>/cmdline (ps) for as long as this process runs; set it in the config file, the environment or a passfile instead (security.md)", "flag", flag)
	}
	return w, l.Logger, nil
}

// secretsReadableByOthers names the secret keys set in the config file at
// path when others may read the file: the HS256 secrets (stage0's
// included) sign a token of any role for anyone who reads them, and the
// URLs' passwords open the database and the bus. Keys from the
// environment or flags are not the file's and are not named.
func secretsReadableByOthers(path string) []string {
	if path == "" {
		return nil
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm()&0o004 == 0 {
		return nil
	}
	cfg, _, err := config.Load(path, nil, nil)
	if err != nil {
		return nil
	}
	var keys []string
	if cfg.Auth.JWT.Secret != "" {
		keys = append(keys, "auth.jwt.secret")
	}
	if cfg.Auth.JWT.PreviousSecret != "" {
		keys = append(keys, "auth.jwt.previous_secret")
	}
	if cfg.Compat.Stage0.JWTSecret != "" {
		keys = append(keys, "compat.stage0.jwt_secret")
	}
	if dsnHasPassword(cfg.DatabaseURL) {
		keys = append(keys, "database_url")
	}
	if redactNATS(cfg.NATS.URL) != cfg.NATS.URL {
		keys = append(keys, "nats.url")
	}
	return keys
}

// secretFlags names the server flags set with a password: a
// --database-url with user:password@ or password=, a --nats-url with
// user:password@ or a token@. The values are not logged.
func secretFlags(overrides map[string]any) []string {
	var out []string
	if v, ok := overrides["database_url"].(string); ok && dsnHasPassword(v) {
		out = append(out, "--database-url")
	}
	// As RedactNATS finds a password or token: nats.go also takes a URL
	// without its scheme, user:password@host, which net/url refuses.
	if v, ok := overrides["nats.url"].(string); ok && config.RedactNATS(v) != v {
		out = append(out, "--nats-url")
	}
	return out
}

// dsnHasPassword reports a PostgreSQL URL or keyword/value string that
// carries a password, found as RedactDSN hides it: where libpq and pgx
// read one ("password = secret", ?password=s3c;ret), not where net/url
// does, which missed a query's password holding a ";".
func dsnHasPassword(dsn string) bool {
	return config.RedactDSN(dsn) != dsn
}

// loggedError is the error a server command ended with, to be logged with
// the command's logger rather than printed as text (main does that).
type loggedError struct {
	err    error
	logger *slog.Logger
}

func (e *loggedError) Error() string { return e.err.Error() }
func (e *loggedError) Unwrap() error { return e.err }

// newLogger builds the logger of the log section. A syslog socket stays
// open for the life of the process.
func newLogger(c config.Log, out io.Writer) (*logging.Logger, error) {
	return logging.New(logging.Options{Format: c.Format, Level: c.Level,
		SyslogAddress: c.SyslogAddress, SyslogFacility: c.SyslogFacility}, out)
}

// keyOthersRead says, by setting, what a private key every local user may
// read gives them.
var keyOthersRead = map[string]string{
	"nats.tls_key":        "the NATS client certificate's key may be read by every local user, who can then present this process's certificate",
	"http.tls_key":        "the API's HTTPS key may be read by every local user, who can then pose as the API to its clients and read the tokens they send",
	"nats.listen_tls_key": "the embedded NATS server's key may be read by every local user, who can then pose as it to the workers that join it",
}

// warnKeyOthersRead logs a warning when the private key file path, of
// setting, may be read by every local user; nothing for "" or a file
// that cannot be stat'ed (its load says why).
func warnKeyOthersRead(logger *slog.Logger, setting, path string) {
	if path == "" {
		return
	}
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o004 != 0 {
		logger.Warn(keyOthersRead[setting]+": chmod 600 it, or 640 to the service's group (security.md)",
			"key", setting, "path", path, "mode", fmt.Sprintf("%o", st.Mode().Perm()))
	}
}
