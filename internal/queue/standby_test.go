package queue_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/queue"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestStandbyReports: a standby's report shows for its host only (one
// whose body names another host is ignored, as a heartbeat's), a removal
// by a standby that no longer reported last leaves the newer report, one
// naming the host's holder does not count, and forgetting the host
// removes it.
func TestStandbyReports(t *testing.T) {
	q, _ := openQueue(t, queue.Options{})
	ctx := testenv.Context(t)
	beat := func(info queue.HostInfo) uint64 {
		t.Helper()
		info.StartedAt, info.LastSeen = time.Now(), time.Now()
		rev, err := q.StandbyBeat(ctx, info)
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
	standbys := func() map[string]queue.HostInfo {
		t.Helper()
		_, sb, err := q.Workers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return sb
	}
	older := beat(queue.HostInfo{Host: "s1", Instance: "s1/a", Version: "v1"})
	beat(queue.HostInfo{Host: "s1", Instance: "s1/b", Version: "v2"})
	if sb := standbys(); len(sb) != 1 || sb["s1"].Instance != "s1/b" || sb["s1"].Version != "v2" {
		t.Fatalf("standbys %+v, want s1's latest report", sb)
	}
	// Standbys are not online hosts.
	if online, err := q.OnlineHosts(ctx); err != nil || len(online) != 0 {
		t.Fatalf("online hosts %+v %v", online, err)
	}
	// s1/a took over (or stopped): its removal must not hide s1/b.
	if err := q.StandbyGone(ctx, "s1", "s1/a", older); err == nil {
		t.Fatal("a report written since was removed")
	}
	if sb := standbys(); sb["s1"].Instance != "s1/b" {
		t.Fatalf("standbys %+v after an outdated removal", sb)
	}
	// A body naming another host, under the key s2's workers may write.
	kv, err := q.JetStream().KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "standby.s2", []byte(`{"host":"s3","instance":"s3/x"}`)); err != nil {
		t.Fatal(err)
	}
	if sb := standbys(); len(sb) != 1 || sb["s1"].Instance != "s1/b" {
		t.Fatalf("standbys %+v: a report under another host's key counted", sb)
	}
	// s1/b took the host over and its last report stayed: it names the
	// holder, so s1 has no standby; nor, once the holder stops, a
	// standby that is its former self.
	if err := q.Heartbeat(ctx, queue.HostInfo{Host: "s1", Instance: "s1/b", LastSeen: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if online, sb, err := q.Workers(ctx); err != nil || len(sb) != 0 || online["s1"].Instance != "s1/b" {
		t.Fatalf("online %+v, standbys %+v (%v): the report naming the holder counted", online, sb, err)
	}
	if sb := standbys(); len(sb) != 0 {
		t.Fatalf("standbys %+v: the report naming the holder counted", sb)
	}
	if err := q.Forget(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if sb := standbys(); len(sb) != 0 {
		t.Fatalf("standbys %+v after s1 was forgotten", sb)
	}
}

// TestStandbyWaitingSinceOnTheServersClock: a standby whose clock is ten
// minutes off the server's, either way, that started waiting 30 s ago by
// its own clock, shows as waiting for 30 s: its start was read on its
// own clock, and showed as ten minutes long, or in the future.
func TestStandbyWaitingSinceOnTheServersClock(t *testing.T) {
	q, _ := openQueue(t, queue.Options{})
	ctx := testenv.Context(t)
	for _, skew := range []time.Duration{10 * time.Minute, -10 * time.Minute} {
		now := time.Now().Add(skew)
		if _, err := q.StandbyBeat(ctx, queue.HostInfo{Host: "skew", Instance: "skew/a", StartedAt: now.Add(-30 * time.Second), LastSeen: now}); err != nil {
			t.Fatal(err)
		}
		_, sb, err := q.Workers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s, ok := sb["skew"]
		if !ok {
			t.Fatalf("skew %v: no standby", skew)
		}
		if waited := s.LastSeen.Sub(s.StartedAt); waited != 30*time.Second {
			t.Errorf("skew %v: waiting since %v, last report %v: %v, want 30s", skew, s.StartedAt, s.LastSeen, waited)
		}
		if d := time.Since(s.StartedAt); d < 25*time.Second || d > 5*time.Minute {
			t.Errorf("skew %v: started waiting %v ago by this clock, want about 30s", skew, d)
		}
	}
}

// TestStandbyGoneRemovesAReportItsBeatDidNotHear: a standby's report
// whose answer it did not wait for (the beat's bound passed on a loaded
// machine) is stored all the same, under a revision the standby never
// learned. Its removal named the last revision it heard, failed ("wrong
// last sequence") and left the stopped standby listed until the bucket's
// TTL (TestStandbyIsReported, hH23). Its own later report is removed;
// another standby's still is not.
func TestStandbyGoneRemovesAReportItsBeatDidNotHear(t *testing.T) {
	ctx := testenv.Context(t)
	q := testenv.Queue(t, testenv.NATS(t), "test", queue.Options{LeaseTTL: 30 * time.Second})
	kv, err := q.JetStream().KeyValue(ctx, queue.HostsBucket)
	if err != nil {
		t.Fatal(err)
	}
	report := func(instance string) []byte {
		b, err := json.Marshal(queue.HostInfo{Host: "s9", Instance: instance, StartedAt: time.Now(), LastSeen: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	heard, err := q.StandbyBeat(ctx, queue.HostInfo{Host: "s9", Instance: "s9/a", StartedAt: time.Now(), LastSeen: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	// The next beat, stored; its answer came after the beat's bound.
	if _, err := kv.Put(ctx, "standby.s9", report("s9/a")); err != nil {
		t.Fatal(err)
	}
	if err := q.StandbyGone(ctx, "s9", "s9/a", heard); err != nil {
		t.Fatalf("the removal of the standby's own unheard report: %v", err)
	}
	if _, sb, err := q.Workers(ctx); err != nil || sb["s9"].Instance != "" {
		t.Fatalf("standbys %+v (%v): the stopped standby is still listed", sb, err)
	}
	// Another standby's report since: left.
	heard, err = q.StandbyBeat(ctx, queue.HostInfo{Host: "s9", Instance: "s9/a", StartedAt: time.Now(), LastSeen: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "standby.s9", report("s9/b")); err != nil {
		t.Fatal(err)
	}
	if err := q.StandbyGone(ctx, "s9", "s9/a", heard); err == nil {
		t.Fatal("another standby's report was removed")
	}
	if _, sb, err := q.Workers(ctx); err != nil || sb["s9"].Instance != "s9/b" {
		t.Fatalf("standbys %+v (%v), want s9/b's report", sb, err)
	}
}
