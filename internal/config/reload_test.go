package config

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// secureYAML is a config with every part of the security setup.
const secureYAML = `auth:
  tokens:
    - name: alice
      sha256: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
      roles: [ops]
policy:
  - name: ops
    roles: [ops]
    hosts: ["*"]
    allow: ["^true$"]
acl:
  allow: ["127.0.0.0/8"]
worker:
  command_path: [/usr/bin]
  exec_root: /usr
  default_user: nobody
`

func TestReloadRefusesAFileThatSetsNothing(t *testing.T) {
	p := writeFile(t, "c.yaml", secureYAML)
	w, _ := newTestWatcher(t, p, nil, nil)
	before, sha := w.Current(), w.Status().SHA256Loaded
	for _, text := range []string{"", "\n\n", "# truncated\n", "auth:\n", "auth:\n  tokens:\n", "{}\n"} {
		rewrite(t, p, text)
		changed, err := w.Reload()
		if !errors.Is(err, ErrEmptyFile) || changed {
			t.Fatalf("reload of %q = %v, %v; want ErrEmptyFile", text, changed, err)
		}
		if !reflect.DeepEqual(w.Current(), before) {
			t.Fatalf("reload of %q changed the running config: %v", text, Changed(before, w.Current()))
		}
		if st := w.Status(); st.SHA256Loaded != sha || !st.Drift || st.PendingError == "" || st.LastReloadError == "" {
			t.Fatalf("status after refusing %q: %+v", text, st)
		}
	}
	// A confirmation does not make nothing into a config.
	if _, err := w.ReloadWith(t.Context(), ReloadOptions{Confirm: hashBytes([]byte("{}\n"))}); !errors.Is(err, ErrEmptyFile) {
		t.Fatalf("confirmed empty reload = %v", err)
	}

	// A process started on an empty file may reload an empty file.
	e := writeFile(t, "e.yaml", "")
	we, _ := newTestWatcher(t, e, nil, nil)
	rewrite(t, e, "# still nothing\n")
	if _, err := we.Reload(); err != nil {
		t.Fatalf("empty to empty: %v", err)
	}
}

func TestReloadRemovingSecurityNeedsConfirmation(t *testing.T) {
	for _, c := range []struct{ name, text, want string }{
		{"principals", without(secureYAML, "auth"), "every principal"},
		{"rules", without(secureYAML, "policy"), "every policy rule"},
		{"acl", without(secureYAML, "acl"), "removes the ACL"},
		{"exec_root", strings.Replace(secureYAML, "  exec_root: /usr\n", "", 1), "worker.exec_root"},
		{"default_user", strings.Replace(secureYAML, "  default_user: nobody\n", "", 1), "worker.default_user"},
		{"command_path", strings.Replace(secureYAML, "[/usr/bin]", "[/usr/local/bin, /usr/bin, /bin, /usr/sbin, /sbin]", 1), "worker.command_path"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := writeFile(t, "c.yaml", secureYAML)
			w, _ := newTestWatcher(t, p, nil, nil)
			before, sha := w.Current(), w.Status().SHA256Loaded
			text := c.text
			rewrite(t, p, text)
			if drift, _ := w.Check(); !drift || !strings.Contains(w.Status().PendingError, c.want) {
				t.Fatalf("Check does not say a reload would need confirmation: %+v", w.Status())
			}
			_, err := w.Reload()
			var ue *UnconfirmedError
			if !errors.As(err, &ue) || !slices.ContainsFunc(ue.Removals, func(s string) bool { return strings.Contains(s, c.want) }) {
				t.Fatalf("Reload = %v; want an UnconfirmedError naming %q", err, c.want)
			}
			if ue.SHA256 != hashBytes([]byte(text)) || !strings.Contains(err.Error(), "confirm="+ue.SHA256) {
				t.Fatalf("refusal does not say how to confirm: %v", err)
			}
			if !reflect.DeepEqual(w.Current(), before) || w.Status().SHA256Loaded != sha {
				t.Fatal("refused reload changed the running config")
			}
			if _, err := w.ReloadWith(t.Context(), ReloadOptions{Confirm: sha}); !errors.As(err, &ue) {
				t.Fatalf("confirming another file's hash: %v", err)
			}
			r, err := w.ReloadWith(t.Context(), ReloadOptions{Confirm: strings.ToUpper(ue.SHA256)})
			if err != nil || !r.Changed || r.SHA256 != ue.SHA256 {
				t.Fatalf("confirmed reload = %+v, %v", r, err)
			}
		})
	}
}

func TestReloadIsAllOrNothing(t *testing.T) {
	p := writeFile(t, "c.yaml", secureYAML)
	w, _ := newTestWatcher(t, p, nil, nil)
	before, sha := w.Current(), w.Status().SHA256Loaded
	var applied []string
	fail := errors.New("key file too weak")
	bad := true
	w.AddPreparer("first", func(_ context.Context, c Config) (func(), error) {
		return func() { applied = append(applied, "first:"+c.Limits.DefaultTimeout.String()) }, nil
	})
	w.AddPreparer("second", func(_ context.Context, c Config) (func(), error) {
		if bad {
			return nil, fail
		}
		return func() { applied = append(applied, "second:"+c.Limits.DefaultTimeout.String()) }, nil
	})
	var notified int
	w.Subscribe(func(Config) { notified++ })

	text := secureYAML + "limits:\n  default_timeout: 5s\n"
	rewrite(t, p, text)
	for range 2 { // a second attempt tries again: never "unchanged"
		changed, err := w.Reload()
		var pe *PrepareError
		if changed || !errors.As(err, &pe) || pe.Part != "second" || !errors.Is(err, fail) {
			t.Fatalf("Reload = %v, %v; want refused by second", changed, err)
		}
		if len(applied) != 0 || notified != 0 || !reflect.DeepEqual(w.Current(), before) {
			t.Fatalf("a refused reload applied something: %v, %d notifications", applied, notified)
		}
		st := w.Status()
		if st.SHA256Loaded != sha || st.SHA256OnDisk != hashBytes([]byte(text)) || !st.Drift ||
			!strings.Contains(st.PendingError, "too weak") || !strings.Contains(st.LastReloadError, "too weak") {
			t.Fatalf("status after a refused reload: %+v", st)
		}
	}
	bad = false
	r, err := w.ReloadWith(t.Context(), ReloadOptions{})
	if err != nil || !r.Changed || !slices.Equal(r.ChangedKeys, []string{"limits.default_timeout"}) {
		t.Fatalf("reload after the fix = %+v, %v", r, err)
	}
	if !slices.Equal(applied, []string{"first:5s", "second:5s"}) || notified != 1 {
		t.Fatalf("commits %v, %d notifications", applied, notified)
	}
	if st := w.Status(); st.Drift || st.PendingError != "" || st.LastReloadError != "" || st.SHA256Loaded != hashBytes([]byte(text)) {
		t.Fatalf("status after the good reload: %+v", st)
	}
	// Preparers run on an unchanged reload too (a rotated key file is
	// read again), but subscribers are told only of changes.
	if _, err := w.Reload(); err != nil || len(applied) != 4 || notified != 1 {
		t.Fatalf("unchanged reload: %v, commits %v, %d notifications", err, applied, notified)
	}
}

func TestSummarize(t *testing.T) {
	old, err := buildFileText(t, secureYAML)
	if err != nil {
		t.Fatal(err)
	}
	nu := old
	nu.Auth.Tokens = append(slices.Clone(old.Auth.Tokens), Token{Name: "bob", SHA256: strings.Repeat("b", 64)})
	nu.Auth.Tokens[0].Roles = []string{"admin"}
	nu.Policy = nil
	nu.ACL.Deny = []string{"10.0.0.0/8"}
	nu.Worker.ExecRoot = ""
	s := Summarize(old, nu)
	want := Summary{
		Principals: Section{Before: 1, After: 2, Added: []string{"token:bob"}, Removed: []string{}, Changed: []string{"token:alice"}},
		Rules:      Section{Before: 1, After: 0, Added: []string{}, Removed: []string{"ops"}, Changed: []string{}},
		ACL:        Section{Before: 1, After: 2, Added: []string{"deny 10.0.0.0/8"}, Removed: []string{}, Changed: []string{}},
		Worker:     Section{Before: 3, After: 2, Added: []string{}, Removed: []string{"worker.exec_root"}, Changed: []string{}},
	}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("Summarize =\n%+v\nwant\n%+v", s, want)
	}
}

// without removes the top-level section name from a YAML text.
func without(text, name string) string {
	var out []string
	skip := false
	for _, line := range strings.SplitAfter(text, "\n") {
		if line != "" && line[0] != ' ' {
			skip = strings.HasPrefix(line, name+":")
		}
		if !skip {
			out = append(out, line)
		}
	}
	return strings.Join(out, "")
}

// buildFileText loads a YAML text as a file would be.
func buildFileText(t *testing.T, text string) (Config, error) {
	t.Helper()
	cfg, _, err := Load(writeFile(t, "c.yaml", text), nil, nil)
	return cfg, err
}

// TestReloadGuardsThePartsInUse: a standalone worker (a preparer that
// guards only the worker part) takes a shared file that drops the API's
// sections, but not one that drops its own containment.
func TestReloadGuardsThePartsInUse(t *testing.T) {
	p := writeFile(t, "c.yaml", secureYAML)
	w, _ := newTestWatcher(t, p, nil, nil)
	w.AddPreparer("worker", func(context.Context, Config) (func(), error) { return func() {}, nil }, PartWorker)

	rewrite(t, p, without(without(without(secureYAML, "auth"), "policy"), "acl"))
	if changed, err := w.Reload(); err != nil || !changed {
		t.Fatalf("worker reload of a file without the API's sections = %v, %v", changed, err)
	}
	rewrite(t, p, strings.Replace(without(without(without(secureYAML, "auth"), "policy"), "acl"), "  exec_root: /usr\n", "", 1))
	var ue *UnconfirmedError
	if _, err := w.Reload(); !errors.As(err, &ue) || len(ue.Removals) != 1 || !strings.Contains(ue.Removals[0], "exec_root") {
		t.Fatalf("worker reload dropping exec_root = %v", err)
	}
}

// TestReloadWithoutAPISaysRestart: a standalone worker has no
// /v1/admin/reload, so its refusal of a file that drops its containment
// (logged, and its drift line's pending_error) says a restart applies
// the file, not to confirm it with a route the worker does not serve.
func TestReloadWithoutAPISaysRestart(t *testing.T) {
	p := writeFile(t, "c.yaml", secureYAML)
	w, _ := newTestWatcher(t, p, nil, nil)
	w.AddPreparer("worker", func(context.Context, Config) (func(), error) { return func() {}, nil }, PartWorker)
	w.RestartConfirms()

	rewrite(t, p, strings.Replace(secureYAML, "  exec_root: /usr\n", "", 1))
	w.Check()
	if pe := w.Status().PendingError; !strings.Contains(pe, "restart it to apply the file") || strings.Contains(pe, "/v1/admin/reload") {
		t.Fatalf("pending_error = %q; want it to say to restart, naming no route", pe)
	}
	_, err := w.Reload()
	var ue *UnconfirmedError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "restart it to apply the file") || strings.Contains(err.Error(), "/v1/admin/reload") {
		t.Fatalf("reload without an API = %v; want a refusal saying to restart, naming no route", err)
	}
}

// TestReloadSaysWhatAFlagOrVariableOverrides: an edit of the file to a key
// a flag or an ORDERLY_ variable sets changes nothing, and the reload
// said nothing of it (changed_keys empty): nats.workers edited and
// reloaded under `serve --nats-workers` issued no seed, silently. It is
// now a warning naming the keys; an edit that applies is not named.
func TestReloadSaysWhatAFlagOrVariableOverrides(t *testing.T) {
	p := writeFile(t, "c.yaml", secureYAML+"listen: 127.0.0.1:8080\nlog:\n  level: info\n")
	w, logs := newTestWatcher(t, p, []string{"ORDERLY_LOG__LEVEL=warn"}, map[string]any{"listen": "127.0.0.1:9090"})
	rewrite(t, p, secureYAML+"listen: 127.0.0.1:8081\nlog:\n  level: debug\nlimits:\n  max_args: 7\n")
	if _, err := w.Reload(); err != nil {
		t.Fatal(err)
	}
	if c := w.Current(); c.Listen != "127.0.0.1:9090" || c.Log.Level != "warn" || c.Limits.MaxArgs != 7 {
		t.Fatalf("running listen %q, log.level %q, limits.max_args %d", c.Listen, c.Log.Level, c.Limits.MaxArgs)
	}
	var line string
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, "that a flag or an ORDERLY_ variable sets") {
			line = l
		}
	}
	if !strings.Contains(line, "keys=\"[listen log.level]\"") {
		t.Fatalf("want a warning naming listen and log.level alone:\n%s", logs.String())
	}
	// A reload whose edits all apply says nothing of the kind.
	rewrite(t, p, secureYAML+"listen: 127.0.0.1:8081\nlog:\n  level: debug\nlimits:\n  max_args: 8\n")
	before := strings.Count(logs.String(), "ORDERLY_ variable sets")
	if _, err := w.Reload(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), "ORDERLY_ variable sets"); n != before {
		t.Fatalf("a reload with nothing overridden warned:\n%s", logs.String())
	}
}
