package intake_test

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/intake"
	"github.com/orderly-run/orderly/internal/metrics"
	"github.com/orderly-run/orderly/internal/testenv"
)

// TestUnqueuedOrderIsCountedOnce: an order recorded whose publish failed
// (answered 503 "recorded but not yet queued") runs once the reconciler
// publishes it, so orderly_orders_submitted_total counts it, once, as it
// counts every row of the orders table (decisions.md: the counters add
// up to the orders table). It was counted only when the first publish
// was answered: never, for such an order.
func TestUnqueuedOrderIsCountedOnce(t *testing.T) {
	m := metrics.New()
	e := newIntakeEnv(t, intake.Options{ReconcileAfter: time.Millisecond, Metrics: m})
	submitted := func() string {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		for line := range strings.Lines(rec.Body.String()) {
			if strings.HasPrefix(line, "orderly_orders_submitted_total{") {
				return strings.TrimSpace(line)
			}
		}
		return ""
	}
	e.pub.failures.Store(1)
	o, err := e.svc.Submit(e.ctx, alice, newOrder("h1", "true"))
	var np *intake.ErrNotPublished
	if !errors.As(err, &np) || np.ID != o.ID {
		t.Fatalf("err %v, want ErrNotPublished for %s", err, o.ID)
	}
	const want = `orderly_orders_submitted_total{source="rest"} 1`
	if got := submitted(); got != want {
		t.Fatalf("after the failed publish: %q, want %q", got, want)
	}
	testenv.WaitUntil(t, 10*time.Second, "the order is older than ReconcileAfter", func() bool {
		return e.count(`SELECT count(*) FROM orders WHERE submitted_at < now() - interval '5 ms'`) == 1
	})
	if n, err := e.svc.Reconcile(e.ctx); err != nil || n != 1 {
		t.Fatalf("reconcile: %d %v, want 1", n, err)
	}
	if got := submitted(); got != want {
		t.Fatalf("after the reconciler published it: %q, want %q", got, want)
	}
}
