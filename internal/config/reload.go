package config

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Preparer builds what a configuration needs in one part of the process
// (the API's authenticator, policy and ACL; a worker's host policy)
// without applying it. It returns commit, which applies what it built and
// cannot fail, or an error that refuses the whole reload. Building before
// committing is what makes a reload all or nothing: either every part
// takes the new file, or none does and the old hash stays loaded.
type Preparer func(ctx context.Context, cfg Config) (commit func(), err error)

// namedPreparer is a Preparer with the part it builds, for errors, and
// the parts of the security setup it uses.
type namedPreparer struct {
	part   string
	fn     Preparer
	guards []Part
}

// ReloadOptions are the caller's choices for one reload.
type ReloadOptions struct {
	// Confirm lifts the guard against a reload that would remove a whole
	// part of the security setup (see Removals). It must be the SHA-256 of
	// the file being confirmed, as the refusal reported it, so that what
	// is confirmed is exactly what was reviewed.
	Confirm string
	// By is who asked, for the log ("" is a signal or the file watcher).
	By string
}

// ReloadResult is what a successful reload did.
type ReloadResult struct {
	// Changed reports whether the effective configuration differs.
	Changed bool
	// ChangedKeys are the keys whose values changed.
	ChangedKeys []string
	// RestartRequired are the changed keys that take effect only after a
	// restart (RestartKeys).
	RestartRequired []string
	// Summary is the change of the security setup, per part.
	Summary Summary
	// SHA256 is the hash of the file now loaded.
	SHA256 string
}

// ErrEmptyFile refuses a reload of a file that sets nothing: it is what a
// truncated write or `: > orderly.yaml` leaves, and applying it would put
// every security setting back to its default.
var ErrEmptyFile = errors.New("the config file sets nothing (empty, or only comments); refusing to fall back to the defaults")

// UnconfirmedError refuses a reload that would remove a whole part of the
// security setup when the caller did not confirm it.
type UnconfirmedError struct {
	SHA256   string   // the file that would need confirming
	Removals []string // what it would remove, as sentences
	Summary  Summary
	// Restart is set in a process with no API to confirm with (a
	// standalone worker): only a restart applies the file.
	Restart bool
}

func (e *UnconfirmedError) Error() string {
	if e.Restart {
		return fmt.Sprintf("the new file %s; this process has no API to confirm it with: restart it to apply the file", strings.Join(e.Removals, "; "))
	}
	return fmt.Sprintf("the new file %s; confirm it with POST /v1/admin/reload?confirm=%s", strings.Join(e.Removals, "; "), e.SHA256)
}

// PrepareError is a reload refused because one part could not build what
// the new config needs (a key file missing or too weak, a command_path
// outside exec_root, PostgreSQL unreachable while loading tokens).
type PrepareError struct {
	Part string
	Err  error
}

func (e *PrepareError) Error() string { return e.Part + ": " + e.Err.Error() }
func (e *PrepareError) Unwrap() error { return e.Err }

// AddPreparer registers p to build part's share of every reload. p runs on
// every reload, changed or not, so a reload also re-reads the files the
// config names (a rotated key file). p runs on the reloading goroutine and
// must not call Reload. guards are the parts of the security setup p
// uses: a reload removing one of them needs confirmation. A process whose
// preparers name no part guards every part, so a standalone worker is not
// held back by the API's sections of a shared file, and an API by the
// worker's.
func (w *Watcher) AddPreparer(part string, p Preparer, guards ...Part) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.preparers = append(w.preparers, namedPreparer{part: part, fn: p, guards: guards})
}

// namedCheck is a part's check, for the drift check.
type namedCheck struct {
	part string
	fn   func(Config) error
}

// AddCheck registers fn, which tells without building or reading anything
// whether part would refuse a config (actions that do not compile). The
// drift check runs no preparer, so this is how its pending_error learns
// in advance what a reload of the file on disk would refuse; a reload
// still relies on part's preparer.
func (w *Watcher) AddCheck(part string, fn func(Config) error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.checks = append(w.checks, namedCheck{part: part, fn: fn})
}

// check runs every part's check on cfg; the first refusal is a
// PrepareError, as the part's preparer would return on a reload.
func (w *Watcher) check(cfg Config) error {
	w.mu.Lock()
	checks := slices.Clone(w.checks)
	w.mu.Unlock()
	for _, c := range checks {
		if err := c.fn(cfg); err != nil {
			return &PrepareError{Part: c.part, Err: err}
		}
	}
	return nil
}

// guarded returns the parts this process's preparers use (all when none
// says).
func (w *Watcher) guarded() []Part {
	w.mu.Lock()
	defer w.mu.Unlock()
	var parts []Part
	for _, p := range w.preparers {
		for _, g := range p.guards {
			if !slices.Contains(parts, g) {
				parts = append(parts, g)
			}
		}
	}
	return parts
}

// Subscribe registers fn to be called with the new configuration after
// each reload that changed it, in reload order, once every preparer has
// committed. fn cannot refuse the reload: anything that can fail belongs
// in a Preparer. fn runs on the reloading goroutine and must not call
// Reload.
func (w *Watcher) Subscribe(fn func(Config)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.subs = append(w.subs, fn)
}

// Reload is ReloadWith without confirmation, as SIGHUP does it: a reload
// that would remove a part of the security setup is refused, and only the
// API can confirm one.
func (w *Watcher) Reload() (changed bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := w.ReloadWith(ctx, ReloadOptions{})
	return r.Changed, err
}

// ReloadWith loads and validates the file, env and overrides again, checks
// that the result does not silently drop the security setup, has every
// preparer build its part, and only then swaps the config and commits
// every part. Any refusal leaves everything as it was: the old config,
// the old hash, the old authenticator, policy and host policy, with the
// reason in Status.
func (w *Watcher) ReloadWith(ctx context.Context, opts ReloadOptions) (ReloadResult, error) {
	w.reloadMu.Lock()
	defer w.reloadMu.Unlock()

	cfg, l, err := Load(w.path, w.environ, w.overrides)
	if err == nil {
		err = w.validate(&cfg)
	}
	if err != nil {
		return ReloadResult{}, w.refuse(l, err)
	}
	old := w.Current()
	w.mu.Lock()
	oldEmpty := w.loaded.Empty
	preparers := slices.Clone(w.preparers)
	w.mu.Unlock()

	if err := w.guard(old, cfg, l, oldEmpty, opts.Confirm); err != nil {
		return ReloadResult{}, w.refuse(l, err)
	}
	commits := make([]func(), 0, len(preparers))
	for _, p := range preparers {
		commit, err := p.fn(ctx, cfg)
		if err != nil {
			return ReloadResult{}, w.refuse(l, &PrepareError{Part: p.part, Err: err})
		}
		commits = append(commits, commit)
	}

	keys := Changed(old, cfg)
	// An edit of the file that a flag or an ORDERLY_ variable overrides
	// changes nothing: said, since the reload otherwise logs no change
	// for it (nats.workers edited under serve --nats-workers).
	file, fileOK := w.fileLayer()
	w.mu.Lock()
	oldFile, oldFileOK := w.file, w.fileOK
	w.mu.Unlock()
	var overridden []string
	if fileOK && oldFileOK {
		for _, k := range Changed(oldFile, file) {
			if !slices.Contains(keys, k) {
				overridden = append(overridden, k)
			}
		}
	}
	res := ReloadResult{Changed: len(keys) > 0, ChangedKeys: keys, RestartRequired: RestartKeys(old, cfg, keys),
		Summary: Summarize(old, cfg), SHA256: l.SHA256}
	w.cur.Store(&cfg)
	for _, commit := range commits {
		if commit != nil {
			commit()
		}
	}

	now := time.Now()
	w.mu.Lock()
	w.loaded, w.loadedAt = l, now
	w.file, w.fileOK = file, fileOK
	w.reloadAt, w.reloadError = now, ""
	w.diskSHA, w.checkedAt = l.SHA256, now
	w.drift, w.driftReason = false, ""
	w.pendingSHA, w.pendingError = "", ""
	subs := slices.Clone(w.subs)
	w.mu.Unlock()

	w.logger.Load().Info("config reloaded", "by", cmp.Or(opts.By, "signal"), "path", w.path, "sha256", l.SHA256, "changed_keys", keys,
		"principals", res.Summary.Principals, "rules", res.Summary.Rules, "acl", res.Summary.ACL, "worker", res.Summary.Worker)
	if len(res.RestartRequired) > 0 {
		w.logger.Load().Warn("config keys changed that take effect only after a restart", "keys", res.RestartRequired)
	}
	if len(overridden) > 0 {
		w.logger.Load().Warn("config keys changed in the file that a flag or an ORDERLY_ variable sets: the running value stays (remove the flag or the variable, and restart)",
			"keys", overridden)
	}
	if res.Changed {
		for _, fn := range subs {
			fn(cfg)
		}
	}
	return res, nil
}

// guard refuses a new config that would drop the security setup: a file
// that sets nothing (unless the running one set nothing either), or one
// that removes a whole part this process guards without confirm naming
// its hash.
func (w *Watcher) guard(old, cfg Config, l Loaded, oldEmpty bool, confirm string) error {
	if l.Empty && !oldEmpty {
		return ErrEmptyFile
	}
	rm := Removals(old, cfg, w.guarded()...)
	if len(rm) == 0 || (l.SHA256 != "" && strings.EqualFold(strings.TrimSpace(confirm), l.SHA256)) {
		return nil
	}
	w.mu.Lock()
	restart := w.restartConfirms
	w.mu.Unlock()
	return &UnconfirmedError{SHA256: l.SHA256, Removals: rm, Summary: Summarize(old, cfg), Restart: restart}
}

// RestartConfirms tells w that this process has no API to confirm a
// reload with (a standalone worker), so that a refusal for removing its
// containment says that a restart applies the file instead of naming a
// route the process does not serve.
func (w *Watcher) RestartConfirms() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.restartConfirms = true
}

// refuse records a refused reload and returns err wrapped with what stays.
// The file it read is the file on disk now, so the status reports it as
// drift with the refusal as the pending error; a later reload of the same
// file tries again.
func (w *Watcher) refuse(l Loaded, err error) error {
	now := time.Now()
	w.mu.Lock()
	loaded := w.loaded.SHA256
	w.reloadAt, w.reloadError = now, err.Error()
	if l.SHA256 != "" {
		w.diskSHA, w.checkedAt = l.SHA256, now
		if l.SHA256 != loaded {
			w.drift = true
			w.driftReason = fmt.Sprintf("config file changed on disk (sha256 %s, loaded %s); its reload was refused, serving the loaded config", short(l.SHA256), short(loaded))
			w.pendingSHA, w.pendingError = l.SHA256, err.Error()
		}
	}
	w.mu.Unlock()
	return fmt.Errorf("reload config %s: refused, still serving sha256 %s: %w", displayPath(w.path), short(loaded), err)
}
