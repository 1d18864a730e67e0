package queue_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/orderly-run/orderly/internal/natsembed"
	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestWorkerRequestsSentAgainWhenTheConnectionDropsUnderThem: a worker's
// lease renewal, heartbeat, claim mark raise and read, release, removal
// of its heartbeat, standby report and its removal, reads of the hosts
// bucket's TTL and of the lease's holder (hB23), and the API's
// request for a host's unit choices, whose request or answer the
// connection loses as it drops (a nats-server restart: written on a
// socket whose server is gone, or taken by the server, which went before
// its answer reached the client), are sent again on the new connection
// and answered within the bound the caller gives them, where each waited
// it out and failed (docs/decisions.md, hD22). A write sent again after
// its first copy was stored is refused by its expected revision and read
// as applied, not written twice: the bucket holds one write more, and
// the holder's next renewal is on that write's revision. A real
// nats-server; the worker's connection (its queue bound as `orderly
// worker` binds it, under the worker's own permissions: the read that
// tells an applied copy must be one it may make), or the API's for the
// choices, through a proxy that drops what one side writes, then cuts
// the connection.
func TestWorkerRequestsSentAgainWhenTheConnectionDropsUnderThem(t *testing.T) {
	const host = "dropped"
	const instance = host + "/drop-1"
	k := queue.NewMarkKey([]byte("the host's seed"))
	type rig struct {
		api, w  *queue.Queue // the API's queue, direct; the worker's, through px
		lease   *queue.Lease
		px      *testenv.CutProxy
		hostsKV jetstream.KeyValue // the API's view of the hosts bucket
		standby uint64             // the revision of the standby report prep wrote
	}
	// The bucket's last sequence: how many writes it has taken.
	lastSeq := func(t *testing.T, r *rig, stream string) uint64 {
		t.Helper()
		st, err := r.api.JetStream().Stream(t.Context(), stream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return info.State.LastSeq
	}
	beat := func(n int) queue.HostInfo {
		return queue.HostInfo{Host: host, Instance: instance, Version: "beat-" + string(rune('a'+n)), LastSeen: time.Now()}
	}
	unit := queue.Unit{Name: "example@0042.service", LoadState: "loaded", ActiveState: "active", SubState: "running"}
	type tcase struct {
		name string
		// bound is what the caller gives the request: the claim mark
		// the worker's markWait, 2 s; the others 4 s, below their 5 s
		// (jetstream's for a renewal and a heartbeat, the action page's
		// for the choices), so that one left waiting fails rather than
		// reads the key back after its wait.
		bound time.Duration
		// toServer: the request is lost, else its answer. The proxy
		// drops from the request that holds sent on (CutProxy.DropWhen),
		// until it has dropped lost.
		toServer   bool
		sent, lost []byte
		// api: the API's connection goes through the proxy (the
		// choices), not the worker's.
		api bool
		// stream is the one the request writes to; check runs after,
		// on a sound connection, with its last sequence from before.
		stream string
		// prep, when set, runs on a sound connection before the drop.
		prep  func(t *testing.T, r *rig, ctx context.Context)
		do    func(t *testing.T, r *rig, ctx context.Context) error
		check func(t *testing.T, r *rig, before uint64)
	}
	renewal := func(toServer bool, sent, lost []byte) tcase {
		return tcase{bound: 4 * time.Second, toServer: toServer, sent: sent, lost: lost, stream: "KV_" + queue.HostsBucket,
			do: func(t *testing.T, r *rig, ctx context.Context) error {
				retaken, err := r.lease.Renew(ctx)
				if retaken {
					t.Error("the renewal says the lease had lapsed")
				}
				return err
			},
			check: func(t *testing.T, r *rig, before uint64) {
				if got := lastSeq(t, r, "KV_"+queue.HostsBucket); got != before+1 {
					t.Errorf("the hosts bucket took %d writes for the renewal, want 1", got-before)
				}
				if holder, err := r.api.LeaseHolder(t.Context(), host); err != nil || holder != instance {
					t.Errorf("the lease is held by %q (%v), want %s", holder, err, instance)
				}
				// On the revision the renewal answered with: one write.
				before = lastSeq(t, r, "KV_"+queue.HostsBucket)
				if _, err := r.lease.Renew(t.Context()); err != nil {
					t.Fatalf("the next renewal: %v", err)
				}
				if got := lastSeq(t, r, "KV_"+queue.HostsBucket); got != before+1 {
					t.Errorf("the next renewal took %d writes, want 1: it was not on the revision the one before answered", got-before)
				}
			}}
	}
	heartbeat := func(toServer bool, sent, lost []byte) tcase {
		return tcase{bound: 4 * time.Second, toServer: toServer, sent: sent, lost: lost, stream: "KV_" + queue.HostsBucket,
			do: func(t *testing.T, r *rig, ctx context.Context) error {
				return r.lease.Beat(ctx, beat(1))
			},
			check: func(t *testing.T, r *rig, before uint64) {
				if got := lastSeq(t, r, "KV_"+queue.HostsBucket); got != before+1 {
					t.Errorf("the hosts bucket took %d writes for the heartbeat, want 1", got-before)
				}
				e, err := r.hostsKV.Get(t.Context(), "info."+host)
				if err != nil {
					t.Fatal(err)
				}
				var h queue.HostInfo
				if err := json.Unmarshal(e.Value(), &h); err != nil || h.Version != beat(1).Version {
					t.Errorf("the host's heartbeat: %s (%v), want the one sent", e.Value(), err)
				}
			}}
	}
	mark := queue.ClaimMark{Seq: 7, Stored: time.Now().UTC(), Attempt: 1}
	raise := func(toServer bool, sent, lost []byte) tcase {
		return tcase{bound: 2 * time.Second, toServer: toServer, sent: sent, lost: lost, stream: "KV_" + queue.MarksBucket,
			do: func(t *testing.T, r *rig, ctx context.Context) error {
				return r.w.RaiseClaimMark(ctx, host, mark, k)
			},
			check: func(t *testing.T, r *rig, before uint64) {
				if got := lastSeq(t, r, "KV_"+queue.MarksBucket); got != before+1 {
					t.Errorf("the marks bucket took %d writes for the raise, want 1", got-before)
				}
				if m, err := r.w.ClaimMarkOf(t.Context(), host, k); err != nil || m.Seq != mark.Seq || m.Attempt != mark.Attempt {
					t.Errorf("the claim mark: %+v (%v), want %+v", m, err, mark)
				}
			}}
	}
	read := func(toServer bool, sent, lost []byte) tcase {
		return tcase{bound: 2 * time.Second, toServer: toServer, sent: sent, lost: lost, stream: "KV_" + queue.MarksBucket,
			do: func(t *testing.T, r *rig, ctx context.Context) error {
				// The mark the rig raised first.
				m, err := r.w.ClaimMarkOf(ctx, host, k)
				if err == nil && m.Seq != 1 {
					t.Errorf("the claim mark read: %+v, want the one raised, at 1", m)
				}
				return err
			},
			check: func(t *testing.T, r *rig, before uint64) {}}
	}
	choices := func(toServer bool, sent, lost []byte) tcase {
		return tcase{bound: 4 * time.Second, toServer: toServer, sent: sent, lost: lost, api: true,
			do: func(t *testing.T, r *rig, ctx context.Context) error {
				units, err := r.api.RequestChoices(ctx, host, "example@*.service")
				if err == nil && (len(units) != 1 || units[0] != unit) {
					t.Errorf("the choices: %+v, want %+v", units, unit)
				}
				return err
			},
			check: func(t *testing.T, r *rig, before uint64) {}}
	}
	// oneWrite checks that the request took one write of the hosts
	// bucket, not two.
	oneWrite := func(t *testing.T, r *rig, before uint64, what string) {
		t.Helper()
		if got := lastSeq(t, r, "KV_"+queue.HostsBucket); got != before+1 {
			t.Errorf("the hosts bucket took %d writes for %s, want 1", got-before, what)
		}
	}
	gone := func(t *testing.T, r *rig, key string) {
		t.Helper()
		if e, err := r.hostsKV.Get(t.Context(), key); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Errorf("%s: %v, want it deleted", key, entryOrErr(e, err))
		}
	}
	release := func(toServer bool, lost []byte) tcase {
		// The worker's bound on its release at the end of a tenure.
		return tcase{bound: 2 * time.Second, toServer: toServer, sent: []byte(queue.ReleasedHeader), lost: lost, stream: "KV_" + queue.HostsBucket,
			do: func(t *testing.T, r *rig, ctx context.Context) error { return r.lease.Release(ctx) },
			check: func(t *testing.T, r *rig, before uint64) {
				oneWrite(t, r, before, "the release")
				st, err := r.api.JetStream().Stream(t.Context(), "KV_"+queue.HostsBucket)
				if err != nil {
					t.Fatal(err)
				}
				m, err := st.GetLastMsgForSubject(t.Context(), "$KV."+queue.HostsBucket+".lease."+host)
				if err != nil || m.Header.Get(queue.ReleasedHeader) != instance {
					t.Errorf("the lease key's last message: %v (%v), want the release by %s", m, err, instance)
				}
			}}
	}
	offline := func(toServer bool, lost []byte) tcase {
		// The worker's bound on its heartbeat's removal at a stop.
		return tcase{bound: 2 * time.Second, toServer: toServer, sent: []byte("info." + host), lost: lost, stream: "KV_" + queue.HostsBucket,
			do: func(t *testing.T, r *rig, ctx context.Context) error { return r.lease.Offline(ctx) },
			check: func(t *testing.T, r *rig, before uint64) {
				oneWrite(t, r, before, "the heartbeat's removal")
				gone(t, r, "info."+host)
			}}
	}
	report := queue.HostInfo{Host: host, Instance: host + "/standby", Version: "standby", LastSeen: time.Now()}
	standbyBeat := func(toServer bool, lost []byte) tcase {
		return tcase{bound: 4 * time.Second, toServer: toServer, sent: []byte("standby." + host), lost: lost, stream: "KV_" + queue.HostsBucket,
			do: func(t *testing.T, r *rig, ctx context.Context) (err error) {
				r.standby, err = r.w.StandbyBeat(ctx, report)
				return err
			},
			// A put, written twice when its answer was lost: the same
			// report twice, the key at the revision returned, which
			// the report's removal names.
			check: func(t *testing.T, r *rig, before uint64) {
				e, err := r.hostsKV.Get(t.Context(), "standby."+host)
				if err != nil || !bytes.Contains(e.Value(), []byte(report.Instance)) || e.Revision() != r.standby {
					t.Errorf("the standby report: %v, want the one sent, at the revision returned, %d", entryOrErr(e, err), r.standby)
				}
			}}
	}
	standbyGone := func(toServer bool, lost []byte) tcase {
		// The worker's bound on the removal of its standby report.
		return tcase{bound: time.Second, toServer: toServer, sent: []byte("standby." + host), lost: lost, stream: "KV_" + queue.HostsBucket,
			prep: func(t *testing.T, r *rig, ctx context.Context) {
				var err error
				if r.standby, err = r.w.StandbyBeat(ctx, report); err != nil {
					t.Fatal(err)
				}
			},
			do: func(t *testing.T, r *rig, ctx context.Context) error {
				return r.w.StandbyGone(ctx, host, r.standby)
			},
			check: func(t *testing.T, r *rig, before uint64) {
				oneWrite(t, r, before, "the standby report's removal")
				gone(t, r, "standby."+host)
			}}
	}
	bucketTTL := func(toServer bool, lost []byte) tcase {
		return tcase{bound: 4 * time.Second, toServer: toServer, sent: []byte("STREAM.INFO.KV_" + queue.HostsBucket), lost: lost,
			do: func(t *testing.T, r *rig, ctx context.Context) error {
				ttl, err := r.w.BucketTTL(ctx)
				if err == nil && ttl != time.Minute {
					t.Errorf("the bucket's TTL read: %s, want the API's lease, 1m", ttl)
				}
				return err
			},
			check: func(t *testing.T, r *rig, before uint64) {}}
	}
	leaseHolder := func(toServer bool, lost []byte) tcase {
		return tcase{bound: 4 * time.Second, toServer: toServer, sent: []byte(".lease." + host), lost: lost,
			do: func(t *testing.T, r *rig, ctx context.Context) error {
				holder, err := r.w.LeaseHolder(ctx, host)
				if err == nil && holder != instance {
					t.Errorf("the lease holder read: %q, want %s", holder, instance)
				}
				return err
			},
			check: func(t *testing.T, r *rig, before uint64) {}}
	}
	named := func(name string, c tcase) tcase { c.name = name; return c }
	pubAck := func(stream string) []byte { return []byte(`"stream":"` + stream + `"`) }
	cases := []tcase{
		named("renewal lost", renewal(true, []byte(instance), []byte(instance))),
		named("renewal's answer lost", renewal(false, []byte(instance), pubAck("KV_"+queue.HostsBucket))),
		named("heartbeat lost", heartbeat(true, []byte(beat(1).Version), []byte(beat(1).Version))),
		named("heartbeat's answer lost", heartbeat(false, []byte(beat(1).Version), pubAck("KV_"+queue.HostsBucket))),
		named("claim mark raise lost", raise(true, []byte(`"seq":7`), []byte(`"seq":7`))),
		named("claim mark raise's answer lost", raise(false, []byte(`"seq":7`), pubAck("KV_"+queue.MarksBucket))),
		named("claim mark read lost", read(true, []byte("claimed."+host), []byte("claimed."+host))),
		named("claim mark read's answer lost", read(false, []byte("claimed."+host), []byte(`"seq":1`))),
		named("choices request lost", choices(true, []byte(queue.ChoicesSubject+host), []byte(queue.ChoicesSubject+host))),
		named("choices answer lost", choices(false, []byte(queue.ChoicesSubject+host), []byte(unit.Name))),
		named("release lost", release(true, []byte(queue.ReleasedHeader))),
		named("release's answer lost", release(false, pubAck("KV_"+queue.HostsBucket))),
		named("heartbeat's removal lost", offline(true, []byte("info."+host))),
		named("heartbeat's removal's answer lost", offline(false, pubAck("KV_"+queue.HostsBucket))),
		named("standby report lost", standbyBeat(true, []byte("standby."+host))),
		named("standby report's answer lost", standbyBeat(false, pubAck("KV_"+queue.HostsBucket))),
		named("standby report's removal lost", standbyGone(true, []byte("standby."+host))),
		named("standby report's removal's answer lost", standbyGone(false, pubAck("KV_"+queue.HostsBucket))),
		named("bucket TTL read lost", bucketTTL(true, []byte("STREAM.INFO.KV_"+queue.HostsBucket))),
		named("bucket TTL read's answer lost", bucketTTL(false, []byte("stream_info_response"))),
		named("lease holder read lost", leaseHolder(true, []byte(".lease."+host))),
		named("lease holder read's answer lost", leaseHolder(false, []byte(instance))),
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// The test's own connections may do anything; the worker
			// what natsembed.WorkerPermissions lets it.
			anyone, worker := nkeyUser(t, nil), nkeyUser(t, natsembed.WorkerPermissions(host))
			ns := testenv.NATSServer(t, &server.Options{Nkeys: []*server.NkeyUser{anyone.user, worker.user}})
			r := &rig{api: testenv.Queue(t, ns.ClientURL(), "api", queue.Options{LeaseTTL: time.Minute}, anyone.key)}
			r.px = testenv.NewCutProxy(t, ns.Addr().String())
			nc, err := queue.Connect("nats://"+r.px.Addr(), "worker",
				append(testenv.NATSEvents(t, "worker"), worker.key, nats.CustomInboxPrefix(queue.WorkerInbox(host)))...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nc.Close)
			ctx := testenv.Context(t)
			if r.w, err = queue.Bind(ctx, nc, queue.Options{}); err != nil {
				t.Fatal(err)
			}
			if r.hostsKV, err = r.api.JetStream().KeyValue(ctx, queue.HostsBucket); err != nil {
				t.Fatal(err)
			}
			if r.lease, err = r.w.AcquireSignedLease(ctx, host, instance, k, nil); err != nil {
				t.Fatal(err)
			}
			if err := r.lease.Beat(ctx, beat(0)); err != nil {
				t.Fatal(err)
			}
			if err := r.w.RaiseClaimMark(ctx, host, queue.ClaimMark{Seq: 1, Stored: time.Now()}, k); err != nil {
				t.Fatal(err)
			}
			if c.api {
				// The API's connection goes through the proxy; the
				// worker serves the host's choices on its own.
				wq := testenv.Queue(t, ns.ClientURL(), "choices worker", queue.Options{}, anyone.key)
				if err := wq.ServeChoices(t.Context(), host, func(ctx context.Context, glob string) ([]queue.Unit, error) {
					return []queue.Unit{unit}, nil
				}); err != nil {
					t.Fatal(err)
				}
				r.api = testenv.Queue(t, "nats://"+r.px.Addr(), "api through the proxy", queue.Options{LeaseTTL: time.Minute}, anyone.key)
			}
			if c.prep != nil {
				c.prep(t, r, ctx)
			}
			var before uint64
			if c.stream != "" {
				before = lastSeq(t, r, c.stream)
			}

			r.px.DropWhen(c.toServer, c.sent)
			done := make(chan error, 1)
			var took time.Duration
			go func() {
				rctx, cancel := context.WithTimeout(ctx, c.bound)
				defer cancel()
				start := time.Now()
				err := c.do(t, r, rctx)
				took = time.Since(start)
				done <- err
			}()
			testenv.WaitUntil(t, 30*time.Second, "the proxy dropping the request or its answer", func() bool {
				return r.px.Dropped(c.lost)
			})
			r.px.Cut()
			if err := <-done; err != nil {
				t.Fatalf("the request the drop lost: %v after %s, want it sent again and answered within %s", err, took.Round(time.Millisecond), c.bound)
			}
			t.Logf("answered %s after it was sent", took.Round(time.Millisecond))
			c.check(t, r, before)
		})
	}
}

// nkeyUser is a NATS user of a new key with perms (nil: any), and the
// option that connects as it.
func nkeyUser(t *testing.T, perms *server.Permissions) (u struct {
	user *server.NkeyUser
	key  nats.Option
}) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	u.user, u.key = &server.NkeyUser{Nkey: pub, Permissions: perms}, nats.Nkey(pub, kp.Sign)
	return u
}

// TestRenewalSentAgainOverARivalsWriteIsNotApplied: a renewal whose
// answer a drop lost is sent again on the new connection, where it is
// refused, the key written since; the key then holds another worker's
// lease (signed with the host's key, after the renewal's revision: a
// standby that took the host), not the renewal's value, and the refusal
// is a lease lost, not the renewal applied. Read as applied, the holder
// renewed a lease it had lost and went on claiming beside the new
// holder.
func TestRenewalSentAgainOverARivalsWriteIsNotApplied(t *testing.T) {
	const host = "rivalled"
	const instance, rival = host + "/holder", host + "/rival"
	key := "lease." + host
	k := queue.NewMarkKey([]byte("the host's seed"))
	ctx := testenv.Context(t)
	api, px, kv, lease := holdThroughProxy(t, host, instance, k)

	px.DropWhen(false, []byte(instance))
	done := make(chan error, 1)
	go func() {
		rctx, cancel := context.WithTimeout(ctx, 4*time.Second)
		defer cancel()
		_, err := lease.Renew(rctx)
		done <- err
	}()
	testenv.WaitUntil(t, 30*time.Second, "the proxy dropping the renewal's answer", func() bool {
		return px.Dropped([]byte(`"stream":"KV_` + queue.HostsBucket + `"`))
	})
	// The renewal is stored; before it is sent again, a rival writes
	// its own lease over it, as a standby on the host's key writes it.
	e, err := kv.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(e.Value(), []byte(instance+"\n")) {
		t.Fatalf("the key holds %q, want the renewal stored", e.Value())
	}
	body := rival + "\n" + strconv.FormatUint(e.Revision(), 10)
	if _, err := kv.Update(ctx, key, []byte(body+"\n"+queue.SignLeaseForTest(k, key, body)), e.Revision()); err != nil {
		t.Fatal(err)
	}
	px.Cut()
	if err := <-done; !errors.Is(err, queue.ErrLeaseLost) {
		t.Fatalf("the renewal sent again over the rival's write: %v, want the lease lost", err)
	}
	if holder, err := api.LeaseHolder(ctx, host); err != nil || holder != rival {
		t.Errorf("the lease is held by %q (%v), want the rival, %s", holder, err, rival)
	}
}

// TestLeaseTakeSentAgainWhenTheConnectionDropsUnderIt: a worker taking a
// free host, whose take (the lease key's create) or its answer the
// connection loses as it drops, sends it again on the new connection and
// holds the lease within the bound it gives the take, where it waited it
// out and failed. A take sent again after its first copy was stored is
// refused (the key exists) and read as taken: the key its own value,
// written once.
func TestLeaseTakeSentAgainWhenTheConnectionDropsUnderIt(t *testing.T) {
	for _, c := range []struct {
		name     string
		toServer bool
	}{
		{"take lost", true},
		{"take's answer lost", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			const host = "taken"
			const instance = host + "/taker"
			k := queue.NewMarkKey([]byte("the host's seed"))
			api, px, w := bindThroughProxy(t)
			lost := []byte(instance)
			if !c.toServer {
				lost = []byte(`"stream":"KV_` + queue.HostsBucket + `"`)
			}
			acquireAcrossTheDrop(t, api, px, w, host, instance, k, lost, func() {
				px.DropWhen(c.toServer, []byte(instance))
			})
		})
	}
}

// entryOrErr shows what a read of a key found, for a test's failure.
func entryOrErr(e jetstream.KeyValueEntry, err error) string {
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%q at %d", e.Value(), e.Revision())
}

// TestReleaseSentAgainOverARivalsTakeDeletesNothing: a release whose
// answer a drop lost is sent again on the new connection, where it is
// refused, the key written since: the standby that woke at the release
// has taken the host. The copy deletes nothing (it names the revision
// the holder released), the rival's lease stays, and the release says
// so at once instead of waiting out its bound. A copy read as applied
// because the key was written after it, or sent without its revision,
// would delete a live holder's lease.
func TestReleaseSentAgainOverARivalsTakeDeletesNothing(t *testing.T) {
	const host = "released"
	const instance, rival = host + "/holder", host + "/rival"
	key := "lease." + host
	k := queue.NewMarkKey([]byte("the host's seed"))
	ctx := testenv.Context(t)
	api, px, kv, lease := holdThroughProxy(t, host, instance, k)

	px.DropWhen(false, []byte(queue.ReleasedHeader))
	const bound = 2 * time.Second // the worker's, at the end of a tenure
	done := make(chan error, 1)
	var took time.Duration
	go func() {
		rctx, cancel := context.WithTimeout(ctx, bound)
		defer cancel()
		start := time.Now()
		err := lease.Release(rctx)
		took = time.Since(start)
		done <- err
	}()
	testenv.WaitUntil(t, 30*time.Second, "the proxy dropping the release's answer", func() bool {
		return px.Dropped([]byte(`"stream":"KV_` + queue.HostsBucket + `"`))
	})
	// The release is stored; before it is sent again, the standby takes
	// the key, as a standby on the host's key writes it.
	if _, err := kv.Get(ctx, key); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("the lease key: %v, want the release stored", err)
	}
	st, err := api.JetStream().Stream(ctx, "KV_"+queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	body := rival + "\n" + strconv.FormatUint(info.State.LastSeq, 10)
	if _, err := kv.Create(ctx, key, []byte(body+"\n"+queue.SignLeaseForTest(k, key, body))); err != nil {
		t.Fatal(err)
	}
	px.Cut()
	err = <-done
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the release sent again over the rival's take: %v after %s, want it refused at once", err, took.Round(time.Millisecond))
	}
	t.Logf("refused after %s: %v", took.Round(time.Millisecond), err)
	if holder, err := api.LeaseHolder(ctx, host); err != nil || holder != rival {
		t.Errorf("the lease is held by %q (%v), want the rival, %s", holder, err, rival)
	}
}

// holdThroughProxy is bindThroughProxy with host's lease held by the
// worker's queue as instance, signed with k; it returns the API's queue
// and view of the hosts bucket, the proxy and the lease.
func holdThroughProxy(t *testing.T, host, instance string, k queue.MarkKey) (*queue.Queue, *testenv.CutProxy, jetstream.KeyValue, *queue.Lease) {
	t.Helper()
	api, px, w := bindThroughProxy(t)
	kv, err := api.JetStream().KeyValue(t.Context(), queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	lease, err := w.AcquireSignedLease(testenv.Context(t), host, instance, k, nil)
	if err != nil {
		t.Fatal(err)
	}
	return api, px, kv, lease
}

// bindThroughProxy starts a nats-server with the API's queue on it, and
// binds a worker's queue (as `orderly worker` binds it) through a
// CutProxy to it.
func bindThroughProxy(t *testing.T) (api *queue.Queue, px *testenv.CutProxy, w *queue.Queue) {
	t.Helper()
	ns := testenv.NATSServer(t, &server.Options{})
	api = testenv.Queue(t, ns.ClientURL(), "api", queue.Options{LeaseTTL: time.Minute})
	px = testenv.NewCutProxy(t, ns.Addr().String())
	nc, err := queue.Connect("nats://"+px.Addr(), "worker", testenv.NATSEvents(t, "worker")...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if w, err = queue.Bind(testenv.Context(t), nc, queue.Options{}); err != nil {
		t.Fatal(err)
	}
	return api, px, w
}
