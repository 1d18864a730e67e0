package natsembed

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/orderly-run/orderly/internal/order"
	"github.com/orderly-run/orderly/internal/secretfile"
)

// Credentials are the nkey seed files of serve's embedded NATS, one per
// role, kept in one directory of the data dir (mode 0700, files 0600).
// The server only ever sees the public keys; a client proves it holds a
// seed by signing the server's nonce (nats.NkeyOptionFromSeed, or
// `nats --nkey FILE`). Seeds are created on first start and kept, so that
// workers started by hand keep working across restarts; deleting a file
// and restarting serve rotates that credential.
type Credentials struct {
	Dir       string
	Serve     string            // serve's own connection: its API and its worker
	API       string            // extra `orderly api` processes
	Submitter string            // NATS submitters (orderly.submit.>)
	Workers   map[string]string // host id → the seed file of its worker
	Operator  string            // a cluster's operators, in SYS (EnsureFleetCredentials)
	Retiring  map[string]string // host → its worker's old public key, still accepted (RotateWorkerSeed)

	users  []*server.NkeyUser
	layout Layout // users in their accounts (accounts.go)
}

// EnsureCredentials loads the seed files in dir, creating the missing
// ones: serve's, the API's, the submitter's, and a worker's for each host
// in workers (serve's own host included, so that a standby worker of it
// can join).
func EnsureCredentials(dir, serveHost string, workers []string) (*Credentials, error) {
	if !order.ValidHost(serveHost) {
		return nil, fmt.Errorf("natsembed: serve's host %q is not a valid host id (1-128 characters of [A-Za-z0-9_-])", serveHost)
	}
	hosts := slices.Clone(workers)
	if !slices.Contains(hosts, serveHost) {
		hosts = append(hosts, serveHost)
	}
	return ensureCredentials(dir, serveHost, hosts)
}

// EnsureClusterCredentials is EnsureCredentials for the servers of a
// cluster, as deploy/nats/auth.conf lays them out: the API's, the
// submitter's and a worker's seed for each of hosts, and no serve. Their
// AccountsConfig is the `accounts` block the servers include.
func EnsureClusterCredentials(dir string, hosts []string) (*Credentials, error) {
	return ensureCredentials(dir, "", hosts)
}

// OperatorFile is the seed file of a fleet's operators, in the system
// account (EnsureFleetCredentials).
const OperatorFile = "operator.nk"

// EnsureFleetCredentials is EnsureClusterCredentials with an operator's
// seed (OperatorFile) in the system account SYS as well, as
// deploy/nats/auth.conf lays them out: `orderly nats-auth` writes a
// fleet's whole auth.conf, and the restarts of "Adding a host"
// (docs/deploy.md) wait on `nats server report jetstream`, which only a
// system account user may run.
func EnsureFleetCredentials(dir string, hosts []string) (*Credentials, error) {
	c, err := ensureCredentials(dir, "", hosts)
	if err != nil {
		return nil, err
	}
	c.Operator = filepath.Join(dir, OperatorFile)
	pub, err := ensureSeed(c.Operator, "operators (system account "+SystemAccount+": nats server report, monitoring)")
	if err != nil {
		return nil, err
	}
	c.layout.System = []User{{Nkey: pub, Comment: "operators (nats server report, monitoring)"}}
	// A host whose seed is being rotated (RotateWorkerSeed) keeps its old
	// key beside the new one, in its account with the same rights, so
	// that its worker, connected by the old, is not dropped at the
	// servers' reload and takes the new at its restart.
	for _, h := range hosts {
		old, err := retiringKey(dir, h)
		if err != nil {
			return nil, err
		}
		if old == "" {
			continue
		}
		if c.Retiring == nil {
			c.Retiring = map[string]string{}
		}
		c.Retiring[h] = old
		perms := WorkerPermissions(h)
		c.users = append(c.users, &server.NkeyUser{Nkey: old, Permissions: perms})
		c.layout.Workers[h] = append(c.layout.Workers[h], User{Nkey: old, Permissions: perms,
			Comment: "worker of host " + h + ": its old key, until `orderly nats-auth --retire-old " + h + "`"})
	}
	return c, nil
}

// RetiringFile is the file, in a fleet's credentials dir, of the public
// key of host's worker seed that RotateWorkerSeed replaced: accepted
// beside the new until RetireOldWorkerKey removes it.
func RetiringFile(host string) string { return "worker-" + host + ".retiring.pub" }

// retiringKey is the public key in host's RetiringFile in dir, or "".
// The file gives its key the worker's permissions of host, as a seed
// does its own: only the file RotateWorkerSeed left is taken
// (secretfile.Read), not one another user planted, nor a link.
func retiringKey(dir, host string) (string, error) {
	path := filepath.Join(dir, RetiringFile(host))
	b, err := secretfile.Read(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if se, ok := errors.AsType[*secretfile.Error](err); ok {
		if se.Shared {
			// Deleted, the old key would stop working under a worker
			// that may still use it.
			return "", fmt.Errorf("natsembed: old key of host %s: %s: chmod 600 it (or delete it to stop accepting the old key)", host, se)
		}
		return "", fmt.Errorf("natsembed: old key of host %s: %s: `orderly nats-auth` did not leave it so, and does not accept its key; delete it to stop accepting an old key", host, se)
	}
	if err != nil {
		return "", fmt.Errorf("natsembed: old key of host %s: %w", host, err)
	}
	for line := range strings.Lines(string(b)) {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			if !nkeys.IsValidPublicUserKey(line) {
				return "", fmt.Errorf("natsembed: %s holds no user public key (delete it to stop accepting host %s's old key)", path, host)
			}
			return line, nil
		}
	}
	return "", fmt.Errorf("natsembed: %s holds no user public key (delete it to stop accepting host %s's old key)", path, host)
}

// RotateWorkerSeed replaces the seed of host's worker in dir with a new
// one, keeping the old one's public key in RetiringFile(host) for
// EnsureFleetCredentials to accept beside the new. A rotation of host
// still under way (its old key not retired) is refused: the key between
// the two would be dropped while a worker may still hold it.
func RotateWorkerSeed(dir, host string) error {
	if !order.ValidHost(host) {
		return fmt.Errorf("natsembed: worker host %q is not a valid host id (1-128 characters of [A-Za-z0-9_-])", host)
	}
	seed := filepath.Join(dir, WorkerFile(host))
	if _, err := os.Lstat(seed); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("natsembed: host %s has no seed %s to rotate: run without --rotate to make its first", host, seed)
	}
	role := "worker of host " + host
	pub, err := ensureSeed(seed, role)
	if err != nil {
		return err
	}
	retiring := filepath.Join(dir, RetiringFile(host))
	old, err := retiringKey(dir, host)
	if err != nil {
		return err
	}
	switch old {
	case "":
		text := fmt.Sprintf("# the old key of host %s's worker, accepted until `orderly nats-auth --retire-old %s`\n%s\n", host, host, pub)
		// Never through a link (retiringKey refuses one), nor over a
		// file another run wrote meanwhile.
		if err := writeNew(retiring, text); err != nil {
			return fmt.Errorf("natsembed: write old key: %w", err)
		}
	case pub:
		// A rotation that stopped before its new seed was in place: the
		// old key is recorded, the seed is still the old one.
	default:
		return fmt.Errorf("natsembed: a rotation of host %s's seed is under way (its old key %s is in %s): "+
			"retire the old key first (--retire-old %s), once the worker runs with the new seed", host, old, retiring, host)
	}
	// The new seed is written beside and renamed over the old, so that
	// the file always holds a whole seed: a worker restarting meanwhile
	// reads the old or the new, both accepted.
	next := seed + ".new"
	if err := os.Remove(next); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("natsembed: %w", err)
	}
	if _, err := writeSeedAs(next, seed, role); err != nil {
		return err
	}
	if err := os.Rename(next, seed); err != nil {
		os.Remove(next)
		return fmt.Errorf("natsembed: %w", err)
	}
	return nil
}

// RetireOldWorkerKey ends the rotation of host's seed: its old key, in
// RetiringFile(host), is no longer accepted by the next AccountsConfig.
// It reports false when there was none: a run retiring it again (its
// first stopped before writing the config) has nothing left to do.
func RetireOldWorkerKey(dir, host string) (bool, error) {
	err := os.Remove(filepath.Join(dir, RetiringFile(host)))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("natsembed: %w", err)
	}
	return true, nil
}

// AccountsConfig is nats-server's `accounts` block of c's users in their
// accounts, for an external server to include.
func (c *Credentials) AccountsConfig() string { return c.layout.Config() }

// ensureCredentials loads or creates the seeds of serveHost's serve
// (none when "") and of the workers of hosts.
func ensureCredentials(dir, serveHost string, hosts []string) (*Credentials, error) {
	for _, h := range hosts {
		if !order.ValidHost(h) {
			return nil, fmt.Errorf("natsembed: worker host %q is not a valid host id (1-128 characters of [A-Za-z0-9_-])", h)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("natsembed: create credentials dir: %w", err)
	}
	// The directory serve made, not one another user made before it
	// (while the data dir was theirs to write) or a link to one: theirs,
	// they could put seeds in it again whatever its mode.
	st, err := os.Lstat(dir)
	if err != nil {
		return nil, fmt.Errorf("natsembed: credentials dir: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("natsembed: credentials dir %s is not a directory (%s): serve did not make it so; delete it to have a new one made", dir, st.Mode().Type())
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("natsembed: credentials dir %s is owned by uid %d, not by the user serve runs as (uid %d): the seeds there are that user's choice; delete it to have a new one made", dir, sys.Uid, os.Geteuid())
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("natsembed: credentials dir: %w", err)
	}
	c := &Credentials{Dir: dir, Workers: map[string]string{}, layout: Layout{Workers: map[string][]User{}}}
	add := func(name, role string, perms *server.Permissions, in *[]User) (string, error) {
		path := filepath.Join(dir, name)
		pub, err := ensureSeed(path, role)
		if err != nil {
			return "", err
		}
		c.users = append(c.users, &server.NkeyUser{Nkey: pub, Permissions: perms})
		*in = append(*in, User{Nkey: pub, Permissions: perms, Comment: role})
		return path, nil
	}
	// serve's connection carries its host's worker, in orderly's account:
	// it holds the API's rights anyway.
	if serveHost != "" {
		if c.Serve, err = add("serve.nk", "serve (API and worker of "+serveHost+")", ServePermissions(serveHost), &c.layout.Orderly); err != nil {
			return nil, err
		}
	}
	if c.API, err = add("api.nk", "api", APIPermissions(), &c.layout.Orderly); err != nil {
		return nil, err
	}
	if c.Submitter, err = add("submitter.nk", "submitter", SubmitterPermissions(), &c.layout.Submitters); err != nil {
		return nil, err
	}
	for _, h := range hosts {
		var users []User
		if c.Workers[h], err = add(WorkerFile(h), "worker of host "+h, WorkerPermissions(h), &users); err != nil {
			return nil, err
		}
		c.layout.Workers[h] = users
	}
	return c, nil
}

// accounts are c's users in their accounts, or all in orderly's with
// one (Options.OneAccount).
func (c *Credentials) accounts(one bool) ([]*server.Account, []*server.NkeyUser, error) {
	if one {
		return c.layout.oneAccount().options()
	}
	return c.layout.options()
}

// Same reports whether c and o accept the same keys with the same roles.
func (c *Credentials) Same(o *Credentials) bool {
	if c == nil || o == nil || len(c.users) != len(o.users) {
		return c == o
	}
	for i := range c.users {
		if c.users[i].Nkey != o.users[i].Nkey {
			return false
		}
	}
	return maps.Equal(c.Workers, o.Workers)
}

// WorkerFile is the name of the seed file of the worker of host.
func WorkerFile(host string) string { return "worker-" + host + ".nk" }

// ensureSeed returns the public key of the user seed in path, first
// writing a new one (mode 0600) when there is none.
func ensureSeed(path, role string) (string, error) {
	// Only the file serve wrote (secretfile.Read): a seed another user
	// planted while the data dir was theirs to write, or a link to a seed
	// kept for another use, made its holder serve's role on the bus.
	b, err := secretfile.Read(path)
	if errors.Is(err, fs.ErrNotExist) {
		return writeSeed(path, role)
	}
	if se, ok := errors.AsType[*secretfile.Error](err); ok {
		if se.Shared {
			return "", fmt.Errorf("natsembed: credential %s: chmod 600 it, or delete it to rotate it", se)
		}
		return "", fmt.Errorf("natsembed: credential %s: serve did not leave it so, and does not take it as its own; delete it to rotate it", se)
	}
	if err != nil {
		return "", fmt.Errorf("natsembed: read credential: %w", err)
	}
	kp, err := nkeys.ParseDecoratedNKey(b)
	if err != nil {
		return "", fmt.Errorf("natsembed: credential %s: %w (delete it to create a new one)", path, err)
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil || !nkeys.IsValidPublicUserKey(pub) {
		return "", fmt.Errorf("natsembed: credential %s is not a user nkey seed (delete it to create a new one)", path)
	}
	return pub, nil
}

func writeSeed(path, role string) (string, error) { return writeSeedAs(path, path, role) }

// writeSeedAs writes a new seed to path whose comment names it as
// shown: the path it is renamed to (RotateWorkerSeed).
func writeSeedAs(path, shown, role string) (string, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return "", fmt.Errorf("natsembed: create nkey: %w", err)
	}
	defer kp.Wipe()
	seed, err := kp.Seed()
	if err != nil {
		return "", err
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# orderly embedded NATS credential: %s\n# public key %s\n# use: --nats-nkey %s (nats CLI: --nkey)\n%s\n", role, pub, shown, seed)
	// Two serves starting on one data dir must not overwrite each
	// other's seed after one of them has loaded it.
	if err := writeNew(path, b.String()); err != nil {
		return "", fmt.Errorf("natsembed: write credential: %w", err)
	}
	return pub, nil
}

// writeNew writes text to path, a file it creates (0600): it fails when
// path exists, as a file or as a link (O_EXCL follows none), and leaves
// no file when a write fails.
func writeNew(path, text string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(text)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// SeededHosts are the hosts whose worker seed file (WorkerFile) is in
// dir, sorted: what an operator's earlier `orderly nats-auth` made, so
// that a host left out of its next run can be named.
func SeededHosts(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("natsembed: credentials dir: %w", err)
	}
	var hosts []string
	for _, e := range entries {
		name := e.Name()
		if h, ok := strings.CutPrefix(name, "worker-"); ok && e.Type().IsRegular() {
			if h, ok = strings.CutSuffix(h, ".nk"); ok && WorkerFile(h) == name && order.ValidHost(h) {
				hosts = append(hosts, h)
			}
		}
	}
	slices.Sort(hosts)
	return hosts, nil
}
