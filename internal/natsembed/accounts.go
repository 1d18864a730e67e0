package natsembed

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
)

// Within one NATS account, permissions cannot stop a worker's seed from
// writing on any subject of it: the server answers a request (a JetStream
// API call, a direct get, a KV put, a fetch) on the reply subject the
// request names, checked against nothing but its reserved prefixes, with
// its own rights, and a stream whose subjects match stores the answer
// (docs/security.md, "Known gaps of a stolen worker seed"). So the
// streams, the buckets, the API and serve live in one account
// (OrderlyAccount), and each host's workers in an account of their own
// that has no JetStream and reaches orderly's only through imports of
// exactly what its worker publishes (service imports) and receives
// (stream imports). A request made through a service import is answered
// on a reply subject the server makes for it in the exporting account,
// and the answer goes back through the importing account: whatever
// reply subject the worker names, the answer lands in its own account,
// where nothing stores it. NATS submitters get an account of their own
// the same way.

// OrderlyAccount holds JetStream (orderly's streams and KV buckets), the
// API and serve.
const OrderlyAccount = "ORDERLY"

// SubmitterAccount holds the NATS submitters.
const SubmitterAccount = "SUBMITTERS"

// WorkerAccount is the account of the workers of host.
func WorkerAccount(host string) string { return "WORKER_" + host }

// User is one nkey user of an account.
type User struct {
	Nkey        string
	Permissions *server.Permissions
	Comment     string // written above the user in the config
}

// Layout is who is in which account: orderly's own users (the API and
// serve), the workers of each host and the submitters. Its Config is the
// `accounts` block of nats-server's configuration.
type Layout struct {
	Orderly    []User
	Workers    map[string][]User // host → the users of its workers
	Submitters []User
	// System, when set, are the users of the system account SYS, for
	// operators (nats server report, monitoring): a cluster's, never
	// serve's.
	System []User
}

// SystemAccount is a cluster's system account.
const SystemAccount = "SYS"

// workerServices are what the worker of host may publish into orderly's
// account: every subject of its permissions is one, so the permissions
// and the imports cannot drift apart.
//
// The last, $JS.API.INFO, is no subject a worker may publish: nats-server
// gives an account without JetStream the whole $JS.API.> of its own,
// answering "JetStream not enabled for account", unless an import of the
// account already covers $JS.API.INFO (enableJetStreamInfoServiceImportOnly).
// Without it, every JetStream request of the worker was answered so,
// never reaching orderly's account.
func workerServices(host string) []string {
	return append(WorkerPermissions(host).Publish.Allow, jsInfo)
}

// jsInfo is JetStream's account info request.
const jsInfo = "$JS.API.INFO"

// workerStreams are what the worker of host receives from orderly's
// account: its control and unit choices subjects, and its inbox prefix,
// where its watch of its lease (a push consumer it creates in orderly's
// account) delivers. Answers to its requests need no import: they come
// back through the service import the request went by.
func workerStreams(host string) []string { return WorkerPermissions(host).Subscribe.Allow }

// submitterServices and submitterStreams are the NATS submitters': they
// publish submissions (and take the PubAck) and receive the API's
// answers on their inboxes or in orderly's reply space.
func submitterServices() []string { return SubmitterPermissions().Publish.Allow }
func submitterStreams() []string  { return SubmitterPermissions().Subscribe.Allow }

// responseType is how many answers a request through the service
// import of subject gets: a pull's next-message request is answered by
// each message it pulls and a status.
func responseType(subject string) string {
	if strings.HasPrefix(subject, "$JS.API.CONSUMER.MSG.NEXT.") {
		return "stream"
	}
	return "singleton"
}

// Config writes the layout as nats-server's `accounts` block. Hosts are
// written in sorted order, so the same layout writes the same text.
func (l Layout) Config() string {
	hosts := slices.Sorted(maps.Keys(l.Workers))

	// Exports of orderly's account, each to the accounts that import it,
	// in the order first named.
	type export struct {
		kind, subject string
		accounts      []string
	}
	var exports []*export
	index := map[string]*export{}
	add := func(kind, subject, account string) {
		k := kind + " " + subject
		e := index[k]
		if e == nil {
			e = &export{kind: kind, subject: subject}
			index[k] = e
			exports = append(exports, e)
		}
		if !slices.Contains(e.accounts, account) {
			e.accounts = append(e.accounts, account)
		}
	}
	for _, h := range hosts {
		for _, s := range workerServices(h) {
			add("service", s, WorkerAccount(h))
		}
		for _, s := range workerStreams(h) {
			add("stream", s, WorkerAccount(h))
		}
	}
	if len(l.Submitters) > 0 {
		for _, s := range submitterServices() {
			add("service", s, SubmitterAccount)
		}
		for _, s := range submitterStreams() {
			add("stream", s, SubmitterAccount)
		}
	}

	var b strings.Builder
	b.WriteString("accounts: {\n")
	fmt.Fprintf(&b, "  %s: {\n    jetstream: enabled\n", OrderlyAccount)
	writeUsers(&b, l.Orderly)
	b.WriteString("    exports: [\n")
	for _, e := range exports {
		quoted := make([]string, len(e.accounts))
		for i, a := range e.accounts {
			quoted[i] = fmt.Sprintf("%q", a)
		}
		if e.kind == "service" {
			fmt.Fprintf(&b, "      { service: %q, response_type: %s, accounts: [%s] }\n", e.subject, responseType(e.subject), strings.Join(quoted, ", "))
		} else {
			fmt.Fprintf(&b, "      { stream: %q, accounts: [%s] }\n", e.subject, strings.Join(quoted, ", "))
		}
	}
	b.WriteString("    ]\n  }\n")
	imports := func(account string, users []User, services, streams []string) {
		fmt.Fprintf(&b, "  %q: {\n", account)
		writeUsers(&b, users)
		b.WriteString("    imports: [\n")
		for _, s := range services {
			fmt.Fprintf(&b, "      { service: { account: %s, subject: %q } }\n", OrderlyAccount, s)
		}
		for _, s := range streams {
			fmt.Fprintf(&b, "      { stream: { account: %s, subject: %q } }\n", OrderlyAccount, s)
		}
		b.WriteString("    ]\n  }\n")
	}
	for _, h := range hosts {
		imports(WorkerAccount(h), l.Workers[h], workerServices(h), workerStreams(h))
	}
	if len(l.Submitters) > 0 {
		imports(SubmitterAccount, l.Submitters, submitterServices(), submitterStreams())
	}
	if len(l.System) > 0 {
		fmt.Fprintf(&b, "  %s: {\n", SystemAccount)
		writeUsers(&b, l.System)
		b.WriteString("  }\n")
	}
	b.WriteString("}\n")
	if len(l.System) > 0 {
		fmt.Fprintf(&b, "system_account: %s\n", SystemAccount)
	}
	return b.String()
}

func writeUsers(b *strings.Builder, users []User) {
	b.WriteString("    users: [\n")
	for _, u := range users {
		if u.Comment != "" {
			fmt.Fprintf(b, "      # %s\n", u.Comment)
		}
		fmt.Fprintf(b, "      {\n        nkey: %s\n", u.Nkey)
		if p := u.Permissions; p != nil {
			b.WriteString("        permissions: {\n")
			list := func(name string, sp *server.SubjectPermission) {
				if sp == nil {
					return
				}
				fmt.Fprintf(b, "          %s: {\n            allow: [\n", name)
				for _, s := range sp.Allow {
					fmt.Fprintf(b, "              %q\n", s)
				}
				b.WriteString("            ]\n          }\n")
			}
			list("publish", p.Publish)
			list("subscribe", p.Subscribe)
			b.WriteString("        }\n")
		}
		b.WriteString("      }\n")
	}
	b.WriteString("    ]\n")
}

// oneAccount is the layout with every user in orderly's account, with
// its role's permissions: deploy/nats/auth.conf before the accounts.
func (l Layout) oneAccount() Layout {
	all := slices.Clone(l.Orderly)
	for _, h := range slices.Sorted(maps.Keys(l.Workers)) {
		all = append(all, l.Workers[h]...)
	}
	all = append(all, l.Submitters...)
	return Layout{Orderly: all, System: l.System}
}

// options reads the layout into nats-server's accounts and users.
func (l Layout) options() ([]*server.Account, []*server.NkeyUser, error) {
	var o server.Options
	if err := o.ProcessConfigString(l.Config()); err != nil {
		return nil, nil, fmt.Errorf("natsembed: accounts: %w", err)
	}
	return o.Accounts, o.Nkeys, nil
}

// ExampleLayout is the layout deploy/nats/auth.conf spells with its
// example keys (their seeds thrown away): the API, the submitters, the
// workers of web-1 and web-2 and an operator in the system account.
func ExampleLayout() Layout {
	return Layout{
		Orderly: []User{{Nkey: "UD77C2I3Z2WMS3RZZ4Y6FLEMRBH43L2OFI5YVR7O67QOJPVBUUXTIG2H", Permissions: APIPermissions(),
			Comment: "API (every `orderly api` replica)"}},
		Workers: map[string][]User{
			"web-1": {{Nkey: "UBFI3V2AAPIEKG5XMJA27X6BYKSAW7FDWSVBOOPUME4LMRPI7VJI3OBI", Permissions: WorkerPermissions("web-1"), Comment: "worker of host web-1"}},
			"web-2": {{Nkey: "UD6NCLI2K4EVJ4FJ63DXQACEQANIDQK2XZ5H6FA6VCPPIPIN64TMDK2Q", Permissions: WorkerPermissions("web-2"), Comment: "worker of host web-2"}},
		},
		Submitters: []User{{Nkey: "UDAJIAHJZNTAOUSJPPBZOXDVJ6UGXWLILLNNANPNVHNRGIXG7EVYBMNY", Permissions: SubmitterPermissions(), Comment: "NATS submitters"}},
		System:     []User{{Nkey: "UB4NYTMQAKNPZC2UN4KHFIPT7MVDA5SNUUGZAW2B3FOX4KSJHMXSXBF2", Comment: "operators (nats server report, monitoring)"}},
	}
}

// adoptGlobalStore moves the JetStream store of a serve from before the
// accounts, whose streams and buckets were in nats-server's global
// account ($G), to orderly's account: nats-server keeps an account's
// streams in a directory named after it, and without the move serve's
// NATS started empty, the queued orders' messages and the hosts' claim
// marks left behind. Once orderly's account has a store of its own, a
// global one is left as it is (a serve from before, started again on
// the data dir, made it).
func adoptGlobalStore(dir string, log *slog.Logger) error {
	old := filepath.Join(dir, "jetstream", "$G")
	now := filepath.Join(dir, "jetstream", OrderlyAccount)
	if _, err := os.Stat(old); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if _, err := os.Stat(now); !errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := os.Rename(old, now); err != nil {
		return fmt.Errorf("natsembed: move the JetStream store to orderly's account: %w", err)
	}
	log.Info("JetStream store moved to orderly's NATS account", "from", old, "to", now)
	return nil
}
