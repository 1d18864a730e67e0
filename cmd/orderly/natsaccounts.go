package main

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/orderly-run/orderly/internal/natsembed"
	"github.com/orderly-run/orderly/internal/order"
)

// natsAuthCommand is `orderly nats-auth`: the seeds of a fleet's NATS
// users and the accounts file its nats-server cluster includes
// (deploy/nats/nats-*.conf's `include "auth.conf"`). By hand that file
// was ~75 lines and 28 exports to copy and edit per worker host
// (decisions.md, hI21); the layout is the one serve's embedded NATS runs
// (natsembed.Layout), so a hand-made file could also drift from it.
func (a *app) natsAuthCommand() *cobra.Command {
	var dir, out string
	var workers, rotate, retire []string
	cmd := &cobra.Command{
		Use:   "nats-auth --creds-dir DIR --workers HOST,... [--out FILE] [--rotate HOST | --retire-old HOST]",
		Short: "Make the NATS seeds of the API, the submitters and each worker host, and the accounts file of a NATS cluster",
		Long: `Makes in --creds-dir (a directory of the seeds' own: made mode 0700, or
0700 already) one nkey seed file (mode 0600) per role: api.nk,
submitter.nk, worker-<host>.nk for each host of --workers, and operator.nk (the
system account's, for nats server report), keeping every seed file already
there, and writes nats-server's accounts block for exactly those keys (to --out,
or stdout): the file deploy/nats/nats-*.conf include as auth.conf. Run it again
with a host added to add its seed and account; a host left out keeps its seed
file but loses its account.

Re-keying a host without a gap takes two runs: --rotate HOST replaces its seed
file with a new one and writes a file that accepts both keys (the old one's
public key is kept in worker-HOST.retiring.pub), so that its worker, connected
by the old, stays connected when the servers reload it; once the worker runs
with the new seed, --retire-old HOST writes the file without the old key.
Runs between the two keep accepting it.`,
		Example: `  orderly nats-auth --creds-dir /etc/orderly/nats-creds --workers web-1,web-2,web-3 --out auth.conf
  orderly nats-auth --creds-dir /etc/orderly/nats-creds --workers web-1,web-2,web-3 --out auth.conf --rotate web-2
  orderly nats-auth --creds-dir /etc/orderly/nats-creds --workers web-1,web-2,web-3 --out auth.conf --retire-old web-2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var hosts []string
			for _, h := range workers {
				h = strings.TrimSpace(h)
				// The worker's own rule (config's host): a host id is one
				// NATS subject token, and its account and subjects are
				// named after it.
				if !order.ValidHost(h) {
					return fmt.Errorf("--workers: host %q must be 1-128 characters of [A-Za-z0-9_-] (one NATS subject token); usage: %s", h, cmd.UseLine())
				}
				if !slices.Contains(hosts, h) {
					hosts = append(hosts, h)
				}
			}
			if len(hosts) == 0 {
				return fmt.Errorf("--workers names no host; usage: %s", cmd.UseLine())
			}
			for i := range rotate {
				rotate[i] = strings.TrimSpace(rotate[i])
			}
			for i := range retire {
				retire[i] = strings.TrimSpace(retire[i])
			}
			// A host re-keyed or retired is one of --workers: a key of a
			// host without an account would be accepted nowhere.
			for _, f := range []struct {
				name  string
				hosts []string
			}{{"--rotate", rotate}, {"--retire-old", retire}} {
				for _, h := range f.hosts {
					if !slices.Contains(hosts, h) {
						return fmt.Errorf("%s: host %q is not in --workers; usage: %s", f.name, h, cmd.UseLine())
					}
				}
			}
			for _, h := range rotate {
				if slices.Contains(retire, h) {
					return fmt.Errorf("--rotate and --retire-old both name host %q: retire the old key once its worker runs with the new seed, in a later run; usage: %s", h, cmd.UseLine())
				}
			}
			// Absolute: each seed file's comment names its path, to be
			// given as nats.nkey on the host that gets it.
			dir, err := filepath.Abs(dir)
			if err != nil {
				return err
			}
			// An existing directory is taken as it is: the seeds'
			// directory is made 0700 by the files' writer, which would
			// chmod a directory others enter too (/etc/orderly, whose
			// configs the API's group reads: the API could no longer
			// start). One of its own is made, or kept, 0700.
			if st, err := os.Lstat(dir); err == nil && st.IsDir() && st.Mode().Perm()&0o077 != 0 {
				return fmt.Errorf("--creds-dir %s is mode %04o, open to others: name a directory of the seeds' own (made mode 0700), "+
					"or chmod 700 it; usage: %s", dir, st.Mode().Perm(), cmd.UseLine())
			}
			before, err := natsembed.SeededHosts(dir)
			if err != nil {
				return err
			}
			// Retired before rotated: a host's rotation is refused while
			// its previous one is under way.
			for _, h := range retire {
				retired, err := natsembed.RetireOldWorkerKey(dir, h)
				if err != nil {
					return err
				}
				if !retired {
					fmt.Fprintf(a.stderr, "orderly: host %s has no old key to retire (no %s): its seed alone is accepted\n",
						h, filepath.Join(dir, natsembed.RetiringFile(h)))
				}
			}
			for _, h := range rotate {
				if err := natsembed.RotateWorkerSeed(dir, h); err != nil {
					return err
				}
				fmt.Fprintf(a.stderr, "orderly: host %s has a new seed %s; its old key is accepted too until --retire-old %s: "+
					"reload the servers with this config, install the new seed on the host, restart its worker, then retire the old key\n",
					h, filepath.Join(dir, natsembed.WorkerFile(h)), h)
			}
			creds, err := natsembed.EnsureFleetCredentials(dir, hosts)
			if err != nil {
				return err
			}
			for _, h := range before {
				if !slices.Contains(hosts, h) {
					fmt.Fprintf(a.stderr, "orderly: host %s is not in --workers: its seed %s is kept, but it has no account in the config written (delete the file once the host is retired)\n",
						h, filepath.Join(dir, natsembed.WorkerFile(h)))
				}
			}
			for _, h := range slices.Sorted(maps.Keys(creds.Retiring)) {
				if !slices.Contains(rotate, h) {
					fmt.Fprintf(a.stderr, "orderly: host %s's old key %s is still accepted (%s): --retire-old %s once its worker runs with the new seed\n",
						h, creds.Retiring[h], filepath.Join(dir, natsembed.RetiringFile(h)), h)
				}
			}
			text := "# orderly's NATS accounts, written by `orderly nats-auth` from the seeds in " + dir + ".\n" +
				"# Hosts: " + strings.Join(slices.Sorted(slices.Values(hosts)), ", ") + ". Run it again to change them; do not edit.\n\n" +
				creds.AccountsConfig()
			if out == "" {
				_, err := fmt.Fprint(a.stdout, text)
				return err
			}
			return writeFileAtomic(out, []byte(text), 0o644)
		},
	}
	cmd.Flags().StringVar(&dir, "creds-dir", "", "directory of the seed files (made mode 0700 if missing; an existing one must be 0700; seeds already there are kept)")
	cmd.Flags().StringSliceVar(&workers, "workers", nil, "worker host ids, comma-separated: each gets a seed and an account")
	cmd.Flags().StringVar(&out, "out", "", "file to write the accounts config to (default: stdout)")
	cmd.Flags().StringSliceVar(&rotate, "rotate", nil, "hosts of --workers whose seed to replace by a new one, the old key still accepted until --retire-old")
	cmd.Flags().StringSliceVar(&retire, "retire-old", nil, "hosts of --workers whose old key (from --rotate) to stop accepting")
	_ = cmd.MarkFlagRequired("creds-dir")
	_ = cmd.MarkFlagRequired("workers")
	return cmd
}

// writeFileAtomic replaces path with b by a rename, so that a
// nats-server reading it (a reload) sees the old file or the new one,
// never half of it.
func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(mode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
