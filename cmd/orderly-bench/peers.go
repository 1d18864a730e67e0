package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
)

// level is the figures of one alternation at one size of history: every
// load of it measured in the same minute, so their ratios hold on a machine
// shared with others.
type level struct {
	history int
	load    string                  // /proc/loadavg before and after
	res     map[string][]loadResult // by contender, one per round
	backlog float64                 // worker side, orders/s
	watched string                  // -profile: serve during the COPY before it (copyWatch)
}

// figure is one ratio of a level and its target.
type figure struct {
	name, target string
	value        float64
	ok           *bool
	lowerBetter  bool
}

// measureLevel alternates, for o.peerTime each and o.peerRounds rounds:
// webhook and orderly (sync submit-and-wait of `true`) at 1 and 8
// connections to one host, orderly on 2 and 8 hosts (one connection each),
// async submit from 32 connections, pgbench inserts at 16 clients, raw
// sequential exec and the floor (exec and one commit); then a backlog of
// o.levelBacklog orders for the worker side rate.
func measureLevel(ctx context.Context, srv *server, c *client, o options, wh *webhookPeer, workerPIDs []int, history int) (*level, error) {
	l := &level{history: history, load: loadavg()}
	d := o.peerTime
	sample := workersCPU(srv.cpu, workerPIDs)
	all := append([]string{o.backlogHost}, extraHosts...)
	sync := func(name string, conns int, hosts []string) contender {
		do := orderlySync(srv.url, srv.token, hosts)
		return contender{name: name, run: func(ctx context.Context) (loadResult, error) {
			return closedLoop(ctx, conns, d, sample, do)
		}}
	}
	// A peer's sample also reads orderly's processes, idle meanwhile:
	// what they spend then is background work that any load pays for
	// (thirty-fourth round: 19 – 28 % of the machine went to "other
	// processes" in webhook's loads at one level, and nothing said it
	// was orderly's).
	peerSample := func() cpuSample {
		s := wh.cpu()
		s.idle = sample().serveSelf
		return s
	}
	peer := func(name string, conns int) contender {
		return contender{name: name, run: func(ctx context.Context) (loadResult, error) {
			return closedLoop(ctx, conns, d, peerSample, wh.request)
		}}
	}
	groups := [][]contender{
		{peer("webhook/1", 1), sync("orderly/1", 1, all[:1])},
		{peer("webhook/8", 8), sync("orderly/8", 8, all[:1]), sync("hosts/2", 2, all[:2]), sync("hosts/8", 8, all)},
		{asyncLoad(srv, o.nowhereHost, 32, d), pgbenchInserts(srv, d)},
		{rawExecFor(d), floorFor(srv, d)},
	}
	progress(fmt.Sprintf("peers at %d orders of history: %d rounds of 10 loads, %s each, neighbours alternated", history, o.peerRounds, d))
	res, err := alternate(ctx, o.peerRounds, groups)
	if err != nil {
		return nil, err
	}
	l.res = res
	if o.levelBacklog > 0 {
		b, err := runBacklog(ctx, c, srv, o.backlogHost, orderBody(o.backlogHost, "true"), o.levelBacklog, o.submitters, o.pollInterval)
		if err != nil {
			return nil, err
		}
		l.backlog = b.workerRate()
	}
	l.load += " → " + loadavg()
	return l, nil
}

// figures are the level's ratios, each the median over the rounds of the
// ratio between neighbours measured in the same round.
func (l *level) figures() []figure {
	rounds := len(l.res["orderly/1"])
	var per [][]figure
	for r := range rounds {
		at := func(name string) loadResult { return l.res[name][r] }
		per = append(per, roundFigures(at, l.backlog))
	}
	f := per[0]
	for i := range f {
		vs := make([]float64, 0, rounds)
		for _, p := range per {
			vs = append(vs, p[i].value)
		}
		f[i].value = median(vs)
		var ok bool
		switch {
		case f[i].target == "":
			continue
		case strings.HasPrefix(f[i].target, "≥"):
			ok = f[i].value >= parseTarget(f[i].target)
		default:
			ok = f[i].value <= parseTarget(f[i].target)
		}
		f[i].ok = &ok
	}
	return f
}

// roundFigures are the ratios of one round; at returns a contender's
// result in that round.
func roundFigures(at func(string) loadResult, backlog float64) []figure {
	w1, o1, w8, o8 := at("webhook/1"), at("orderly/1"), at("webhook/8"), at("orderly/8")
	h2, h8 := at("hosts/2"), at("hosts/8")
	q := func(x loadResult, p float64) float64 { return float64(pct(x.lat, p)) }
	f := []figure{
		{name: "sync, 1 connection: rate ÷ webhook's", value: o1.rate() / w1.rate(), target: "≥ 0.5"},
		{name: "sync, 1 connection: p50 ÷ webhook's", value: q(o1, .5) / q(w1, .5), target: "≤ 2", lowerBetter: true},
		{name: "sync, 1 connection: p99 ÷ webhook's", value: q(o1, .99) / q(w1, .99), target: "≤ 4", lowerBetter: true},
		{name: "sync, 8 connections, one host: rate ÷ webhook's", value: o8.rate() / w8.rate()},
		{name: "sync, 8 connections, one host: p50 ÷ webhook's", value: q(o8, .5) / q(w8, .5), lowerBetter: true},
		{name: "sync, 8 connections, one host: p99 ÷ webhook's", value: q(o8, .99) / q(w8, .99), lowerBetter: true},
		{name: "2 hosts, 2 connections: rate ÷ webhook's at 8", value: h2.rate() / w8.rate()},
		{name: "8 hosts, 8 connections: rate ÷ webhook's at 8", value: h8.rate() / w8.rate(), target: "≥ 0.75"},
		{name: "8 hosts ÷ 1 host (total rate)", value: h8.rate() / o1.rate(), target: "≥ 1"},
		{name: "CPU per order, sync, 1 connection ÷ webhook's per request", value: o1.cpu.perOrder(o1.n) / w1.cpu.perOrder(w1.n), target: "≤ 2", lowerBetter: true},
		{name: "async submit (32 connections) ÷ pgbench inserts (16 clients)", value: at("async/32").rate() / at("pgbench").rate(), target: "≥ 0.5"},
	}
	f = append(f, figure{name: "the floor (exec + one fsynced commit) ÷ raw exec: the best backlog ratio the contract allows", value: at("floor").rate() / at("raw exec").rate()})
	if backlog > 0 {
		f = append(f, figure{name: "per-host backlog, worker side ÷ raw exec", value: backlog / at("raw exec").rate(), target: "≥ 0.6"},
			figure{name: "per-host backlog, worker side ÷ the floor", value: backlog / at("floor").rate()})
	}
	return f
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func parseTarget(t string) float64 {
	var v float64
	fmt.Sscanf(strings.TrimSpace(strings.TrimLeft(t, "≥≤ ")), "%g", &v)
	return v
}

// section is the level's markdown: the ratios with their targets, then the
// absolute figures they come from.
func (l *level) section() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n#### %d orders in history (load average %s)\n\n", l.history, l.load)
	b.WriteString("| ratio (same run, alternated) | value | target | |\n|---|---|---|---|\n")
	for _, f := range l.figures() {
		fmt.Fprintf(&b, "| %s | %.2f | %s | %s |\n", f.name, f.value, f.target, verdict(f.ok))
	}
	b.WriteString("\n(each ratio: the median over the rounds of the ratio between neighbours in one round)\n")
	b.WriteString("\n| load (all rounds pooled) | rate | p50 | p99 | CPU per order or request |\n|---|---|---|---|---|\n")
	for _, name := range []string{"webhook/1", "orderly/1", "webhook/8", "orderly/8", "hosts/2", "hosts/8", "async/32", "pgbench", "raw exec", "floor"} {
		x := pooled(l.res[name])
		server := "orderly"
		if strings.HasPrefix(name, "webhook") {
			server = "webhook"
		}
		p50, p99, cpu := "", "", ""
		if len(x.lat) > 0 {
			p50, p99 = ms(pct(x.lat, .5)), ms(pct(x.lat, .99))
		}
		if name != "pgbench" && name != "raw exec" && name != "floor" {
			cpu = x.cpu.split(x.n, server)
		}
		fmt.Fprintf(&b, "| %s | %.0f/s | %s | %s | %s |\n", name, x.rate(), p50, p99, cpu)
	}
	if l.backlog > 0 {
		fmt.Fprintf(&b, "| backlog, worker side | %.0f/s | | | |\n", l.backlog)
	}
	if l.watched != "" {
		b.WriteString("\n" + l.watched + "\n")
	}
	return b.String()
}

// growth compares every ratio at each size of history with the empty
// database's: the target is a change of at most 10 %.
func growth(levels []*level) string {
	if len(levels) < 2 {
		return ""
	}
	var b strings.Builder
	b.WriteString("\n#### History growth (each ratio ÷ the same ratio with an empty history)\n\n| ratio |")
	for _, l := range levels[1:] {
		fmt.Fprintf(&b, " %d |", l.history)
	}
	b.WriteString("\n|---|" + strings.Repeat("---|", len(levels)-1) + "\n")
	base := levels[0].figures()
	for i, f0 := range base {
		fmt.Fprintf(&b, "| %s |", f0.name)
		for _, l := range levels[1:] {
			f := l.figures()
			if i >= len(f) {
				b.WriteString(" |")
				continue
			}
			ch := f[i].value/f0.value - 1
			if f0.lowerBetter {
				ch = -ch
			}
			mark := "✓"
			if ch < -0.10 || math.IsNaN(ch) {
				mark = "✗"
			}
			fmt.Fprintf(&b, " %+.0f %% %s |", 100*ch, mark)
		}
		b.WriteString("\n")
	}
	b.WriteString("\n(+ is better: a higher rate ratio, a lower latency or CPU ratio; ✗ is a loss of more than 10 %.)\n")
	return b.String()
}

func verdict(ok *bool) string {
	switch {
	case ok == nil:
		return ""
	case *ok:
		return "✓ met"
	}
	return "✗ missed"
}

func loadavg() string {
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		return strings.Join(strings.Fields(string(b))[:3], " ")
	}
	return "?"
}
