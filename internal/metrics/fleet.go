package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// FleetSources are the reads behind the fleet gauges, made at scrape time
// so that no gauge is ever stale. A nil source leaves its gauges out.
type FleetSources struct {
	// QueueAges is how long the oldest queued order of each host waited.
	QueueAges func(context.Context) (map[string]time.Duration, error)
	// Unpublished is the reconciler's backlog: orders recorded but not yet
	// in their host's stream, and the age of the oldest.
	Unpublished func(context.Context) (int, time.Duration, error)
	// Hosts maps every known host to whether its worker is online now,
	// and whether a second worker stands by for it.
	Hosts func(context.Context) (map[string]HostState, error)
	// Dependencies are checks by name ("postgres", "nats"): nil is up.
	Dependencies map[string]func(context.Context) error
}

// HostState is what the fleet gauges say of a host.
type HostState struct {
	Online  bool // its worker heartbeats
	Standby bool // another worker waits for its lease
	// PostgresUnreachable: its worker heartbeats but cannot reach
	// PostgreSQL, so it runs nothing (queue.HostInfo).
	PostgresUnreachable bool
}

var (
	queueAgeDesc = prometheus.NewDesc("orderly_queue_oldest_age_seconds",
		"Age of the oldest queued order per host (hosts with queued orders only), read from PostgreSQL at scrape time.", []string{"host"}, nil)
	unpublishedDesc = prometheus.NewDesc("orderly_unpublished_orders",
		"Orders recorded in PostgreSQL but not yet confirmed in their host's stream (the reconciler's backlog).", nil, nil)
	unpublishedAgeDesc = prometheus.NewDesc("orderly_unpublished_oldest_age_seconds",
		"Age of the oldest order not yet confirmed in its host's stream; 0 when there is none.", nil, nil)
	hostOnlineDesc = prometheus.NewDesc("orderly_host_online",
		"1 when the host's worker heartbeats, 0 for a host seen before or with orders queued whose worker does not.", []string{"host"}, nil)
	hostStandbyDesc = prometheus.NewDesc("orderly_host_standby",
		"1 when a second worker of the host waits for its lease, ready to take it over; 0 for the other hosts orderly_host_online reports.", []string{"host"}, nil)
	hostPostgresDesc = prometheus.NewDesc("orderly_host_postgres_unreachable",
		"1 when the host's worker is online (holds its lease) but its statements to PostgreSQL fail, so its orders wait; 0 for the other hosts orderly_host_online reports.", []string{"host"}, nil)
	dependencyDesc = prometheus.NewDesc("orderly_dependency_up",
		"1 when this process reaches the dependency (postgres, nats) at scrape time, else 0; nats is also 0 while it acknowledges no order publish (a full store).", []string{"dependency"}, nil)
)

// WatchFleet registers the fleet gauges read from src at scrape time.
func (m *Metrics) WatchFleet(src FleetSources) {
	if m != nil {
		m.registry.MustRegister(&fleetCollector{src: src})
	}
}

type fleetCollector struct {
	src FleetSources
}

func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{queueAgeDesc, unpublishedDesc, unpublishedAgeDesc, hostOnlineDesc, hostStandbyDesc, hostPostgresDesc, dependencyDesc} {
		ch <- d
	}
}

// Collect reads every source with its own deadline, all at once, so that
// one slow or unreachable dependency does not hide the others (it shows
// as down, or as an invalid metric in the scrape) nor add its deadline
// to theirs: one after the other, a frozen PostgreSQL made a scrape take
// 8 s (four reads of 2 s), past a scrape_timeout of 5 s, and the target
// then read as down, with no orderly_dependency_up to say which
// dependency was.
func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	var wg sync.WaitGroup
	read := func(f func(context.Context)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			f(ctx)
		}()
	}
	// The hosts with queued orders, for the hosts' gauges; nil when
	// unknown.
	waitingCh := make(chan map[string]time.Duration, 1)
	if c.src.QueueAges != nil {
		read(func(ctx context.Context) {
			ages, err := c.src.QueueAges(ctx)
			waitingCh <- ages
			if err != nil {
				ch <- prometheus.NewInvalidMetric(queueAgeDesc, err)
				return
			}
			for host, age := range ages {
				ch <- prometheus.MustNewConstMetric(queueAgeDesc, prometheus.GaugeValue, age.Seconds(), host)
			}
		})
	} else {
		waitingCh <- nil
	}
	if c.src.Unpublished != nil {
		read(func(ctx context.Context) {
			n, oldest, err := c.src.Unpublished(ctx)
			if err != nil {
				ch <- prometheus.NewInvalidMetric(unpublishedDesc, err)
				return
			}
			ch <- prometheus.MustNewConstMetric(unpublishedDesc, prometheus.GaugeValue, float64(n))
			ch <- prometheus.MustNewConstMetric(unpublishedAgeDesc, prometheus.GaugeValue, oldest.Seconds())
		})
	}
	if c.src.Hosts != nil {
		read(func(ctx context.Context) {
			hosts, err := c.src.Hosts(ctx)
			waiting := <-waitingCh
			if err != nil {
				ch <- prometheus.NewInvalidMetric(hostOnlineDesc, err)
				ch <- prometheus.NewInvalidMetric(hostStandbyDesc, err)
				ch <- prometheus.NewInvalidMetric(hostPostgresDesc, err)
				return
			}
			// A host no worker ever served but with orders waiting (a
			// mistyped id, a worker never deployed) is offline too.
			for host := range waiting {
				if _, known := hosts[host]; !known {
					hosts[host] = HostState{}
				}
			}
			for host, st := range hosts {
				ch <- prometheus.MustNewConstMetric(hostOnlineDesc, prometheus.GaugeValue, gaugeOf(st.Online), host)
				ch <- prometheus.MustNewConstMetric(hostStandbyDesc, prometheus.GaugeValue, gaugeOf(st.Standby), host)
				ch <- prometheus.MustNewConstMetric(hostPostgresDesc, prometheus.GaugeValue, gaugeOf(st.PostgresUnreachable), host)
			}
		})
	}
	for name, check := range c.src.Dependencies {
		read(func(ctx context.Context) {
			v := 1.0
			if check(ctx) != nil {
				v = 0
			}
			ch <- prometheus.MustNewConstMetric(dependencyDesc, prometheus.GaugeValue, v, name)
		})
	}
	wg.Wait()
}

// gaugeOf is b as a gauge's value.
func gaugeOf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
