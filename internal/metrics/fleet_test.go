package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orderly-run/orderly/internal/metrics"
	"github.com/orderly-run/orderly/internal/order"
)

// TestFleetGauges scrapes the fleet gauges from sources that answer, and
// checks that a dependency that fails shows as down rather than failing
// the scrape.
func TestFleetGauges(t *testing.T) {
	m := metrics.New()
	m.WatchFleet(metrics.FleetSources{
		QueueAges: func(context.Context) (map[string]time.Duration, error) {
			return map[string]time.Duration{"web-1": 90 * time.Second, "web-9": time.Second}, nil
		},
		Unpublished: func(context.Context) (int, time.Duration, error) { return 2, 15 * time.Second, nil },
		Hosts: func(context.Context) (map[string]metrics.HostState, error) {
			return map[string]metrics.HostState{"web-1": {}, "web-2": {Online: true, Standby: true}, "web-3": {Online: true, PostgresUnreachable: true}}, nil
		},
		Dependencies: map[string]func(context.Context) error{
			"postgres": func(context.Context) error { return nil },
			"nats":     func(context.Context) error { return errors.New("nats: not connected") },
		},
	})
	m.Request("/v1/orders", "POST", 503, time.Millisecond)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`orderly_queue_oldest_age_seconds{host="web-1"} 90`,
		`orderly_unpublished_orders 2`,
		`orderly_unpublished_oldest_age_seconds 15`,
		`orderly_host_online{host="web-1"} 0`,
		`orderly_host_online{host="web-2"} 1`,
		`orderly_host_online{host="web-9"} 0`, // never served, orders waiting
		`orderly_host_standby{host="web-1"} 0`,
		`orderly_host_standby{host="web-2"} 1`,
		`orderly_host_standby{host="web-9"} 0`,
		`orderly_host_postgres_unreachable{host="web-2"} 0`,
		`orderly_host_postgres_unreachable{host="web-3"} 1`, // online, cut off from PostgreSQL
		`orderly_host_postgres_unreachable{host="web-9"} 0`,
		`orderly_dependency_up{dependency="postgres"} 1`,
		`orderly_dependency_up{dependency="nats"} 0`,
		`orderly_http_unavailable_total{route="/v1/orders"} 1`,
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("scrape lacks %s", want)
		}
	}
	if rec.Code != 200 {
		t.Errorf("scrape answered %d", rec.Code)
	}
}

// TestScrapeWithPostgresDown: gauges that cannot be read are left out and
// the scrape still answers 200 with the rest, so orderly_dependency_up
// (and the alert on it) says what is down.
func TestScrapeWithPostgresDown(t *testing.T) {
	m := metrics.New()
	down := errors.New("database unavailable")
	m.WatchFleet(metrics.FleetSources{
		QueueAges:   func(context.Context) (map[string]time.Duration, error) { return nil, down },
		Unpublished: func(context.Context) (int, time.Duration, error) { return 0, 0, down },
		Dependencies: map[string]func(context.Context) error{
			"postgres": func(context.Context) error { return down },
		},
	})
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	if rec.Code != 200 || !strings.Contains(string(body), `orderly_dependency_up{dependency="postgres"} 0`+"\n") {
		t.Fatalf("scrape with PostgreSQL down: %d\n%s", rec.Code, body)
	}
}

// TestMethodLabel: a method no client needs is one series, not one each.
func TestMethodLabel(t *testing.T) {
	m := metrics.New()
	for _, method := range []string{"GET", "X1", "X2", "FOO", "post"} {
		m.Request("unmatched", method, 405, time.Millisecond)
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, bad := range []string{`method="X1"`, `method="FOO"`, `method="post"`} {
		if strings.Contains(string(body), bad) {
			t.Errorf("scrape has a series with %s", bad)
		}
	}
	if !strings.Contains(string(body), `method="other"`) || !strings.Contains(string(body), `method="GET"`) {
		t.Errorf("scrape lacks method=\"other\" or method=\"GET\":\n%s", body)
	}
}

// TestHostLabelsAreBounded: a client chooses an order's host, and the API
// counts the queued orders it cancels or expires under it: orders to
// made-up hosts added series kept for the process's life. Past 10,000
// hosts, new ones are counted under "other"; hosts already seen keep
// their own series.
func TestHostLabelsAreBounded(t *testing.T) {
	m := metrics.New()
	m.WorkerHost("web-1")
	for i := range 10100 {
		m.Finished(fmt.Sprintf("stray-%d", i), order.StatusCanceled, -1)
	}
	m.Finished("web-1", order.StatusSucceeded, time.Millisecond)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	if n := strings.Count(string(body), "\norderly_orders_finished_total{"); n > 10000+8 {
		t.Errorf("%d finished series after 10,100 made-up hosts, want at most 10,000 hosts' worth", n)
	}
	for _, want := range []string{`orderly_orders_finished_total{host="other",status="canceled"} 101`,
		`orderly_orders_finished_total{host="web-1",status="succeeded"} 1`,
		`orderly_orders_finished_total{host="stray-0",status="canceled"} 1`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("scrape lacks %s", want)
		}
	}
}

// TestScrapeWithPostgresFrozen: PostgreSQL accepts the fleet gauges'
// reads and answers none (stopped, its disk hung) until each read's
// deadline. The reads went one after the other, each waiting out its
// 2 s: a scrape took 8 s, past a Prometheus scrape_timeout of 5 s, and
// the target read as down without the orderly_dependency_up that says
// which dependency is. Each frozen read here waits, until its deadline,
// for all of them to be in flight together: read one after the other,
// none ever sees the rest.
func TestScrapeWithPostgresFrozen(t *testing.T) {
	const frozen = 4 // QueueAges, Unpublished, Hosts, the postgres check
	var mu sync.Mutex
	entered, met := 0, 0
	all := make(chan struct{})
	freeze := func(ctx context.Context) error {
		mu.Lock()
		if entered++; entered == frozen {
			close(all)
		}
		mu.Unlock()
		select {
		case <-all:
			mu.Lock()
			met++
			mu.Unlock()
			<-ctx.Done() // and then as frozen as before
		case <-ctx.Done():
		}
		return ctx.Err()
	}
	m := metrics.New()
	m.WatchFleet(metrics.FleetSources{
		QueueAges:   func(ctx context.Context) (map[string]time.Duration, error) { return nil, freeze(ctx) },
		Unpublished: func(ctx context.Context) (int, time.Duration, error) { return 0, 0, freeze(ctx) },
		Hosts:       func(ctx context.Context) (map[string]metrics.HostState, error) { return nil, freeze(ctx) },
		Dependencies: map[string]func(context.Context) error{
			"postgres": freeze,
			"nats":     func(context.Context) error { return nil },
		},
	})
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	if rec.Code != 200 || !strings.Contains(string(body), `orderly_dependency_up{dependency="postgres"} 0`+"\n") ||
		!strings.Contains(string(body), `orderly_dependency_up{dependency="nats"} 1`+"\n") {
		t.Fatalf("scrape with PostgreSQL frozen: %d\n%s", rec.Code, body)
	}
	if met != frozen {
		t.Errorf("%d of the %d reads of a frozen PostgreSQL were in flight together, want all: a scrape waits out each one's deadline after the other's", met, frozen)
	}
}
