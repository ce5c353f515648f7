package report

import (
	"fmt"
	"io"
	"strings"

	"github.com/fnhook/fnhook/bench/stats"
)

// WriteMarkdown renders r as Markdown tables: load, cold, create, then ratios and targets.
func (r *Results) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	s := r.Settings
	fmt.Fprintf(&b, "## fnhook bench, %s (%d CPUs, node %s, %.0f s)\n\n",
		r.StartedAt.UTC().Format("2006-01-02 15:04 UTC"), r.Host.CPUs, r.Host.Node, r.Seconds)

	fmt.Fprintf(&b, "### Warm: closed loop, %d connections, %g s after %g s warm-up (and serial: 1 connection)\n\n", s.Concurrency, s.DurationS, s.WarmupS)
	b.WriteString("| server | tool | req/s | p50 ms | p90 ms | p99 ms | max ms | requests | errors |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, row := range []struct {
		name string
		s    Server
	}{
		{"floor: node on the host", r.Floor},
		{"bridge floor: node in a bridge-mode exec job", r.BridgeFloor},
		{"fnhook warm: gateway -> runner", r.Warm},
	} {
		if row.s.Error != "" {
			fmt.Fprintf(&b, "| %s | - | failed: %s | | | | | | |\n", row.name, cell(row.s.Error))
		}
		for _, l := range []*Load{row.s.Go, row.s.Wrk, row.s.Serial} {
			if l == nil {
				continue
			}
			tool := l.Tool
			if l == row.s.Serial {
				tool = "go, 1 at a time"
			}
			fmt.Fprintf(&b, "| %s | %s | %.0f | %s | %s | %s | %s | %d | %d |\n", row.name, tool, l.RPS,
				f3(l.Latency.P50), f3(l.Latency.P90), f3(l.Latency.P99), f3(l.Latency.Max), l.Requests, l.Errors)
		}
	}

	fmt.Fprintf(&b, "\n### Cold: fresh tenant, pool warm, modules on the node (N = %d per kind)\n\n", s.ColdN)
	b.WriteString("| case | N | p50 ms | p90 ms | p99 ms | max ms | notes |\n|---|--:|--:|--:|--:|--:|---|\n")
	for _, c := range r.Cold {
		if c.Error != "" && c.First.N == 0 {
			fmt.Fprintf(&b, "| cold, %s | 0 | | | | | failed: %s |\n", c.Kind, cell(c.Error))
			continue
		}
		note := fmt.Sprintf("%d failed, %d not marked cold", c.Errors, c.NotCold)
		if c.Error != "" {
			note += "; " + cell(c.Error)
		}
		row(&b, "cold first call, "+c.Kind, c.First, note)
		row(&b, "second call, "+c.Kind, c.Second, "same tenant right after")
	}
	if r.RequireMs.N > 0 {
		row(&b, "require('"+r.RequireModule+"') in a fresh node", r.RequireMs, "host, from the node's module cache")
	}
	if r.Naive.Error != "" {
		fmt.Fprintf(&b, "| naive: node spawned per request | 0 | | | | | failed: %s |\n", cell(r.Naive.Error))
	} else {
		row(&b, "naive: node spawned per request", r.Naive.Latency, "reference")
	}

	b.WriteString("\n### Function create: PUT to `ready` (GET polled every 5 ms)\n\n")
	b.WriteString("| case | N | p50 ms | p90 ms | p99 ms | max ms | notes |\n|---|--:|--:|--:|--:|--:|---|\n")
	if r.Create.Error != "" && r.Create.Built.N == 0 {
		fmt.Fprintf(&b, "| modules built | 0 | | | | | failed: %s |\n", cell(r.Create.Error))
	} else {
		row(&b, "modules built", r.Create.Built, cell(r.Create.Error))
	}
	if nm := r.Create.NewModule; nm != nil {
		note := "status " + nm.Status
		if nm.Error != "" {
			note += ": " + cell(nm.Error)
		}
		fmt.Fprintf(&b, "| new module %s (npm install + upload) | 1 | %s | | | | %s |\n", nm.Module, f3(nm.Ms), note)
	}

	ra := r.Ratios
	b.WriteString("\n### Ratios\n\n| ratio | value |\n|---|--:|\n")
	for _, x := range []struct {
		name string
		v    float64
	}{
		{"warm p50 / floor p50", ra.WarmP50OverFloorP50},
		{"warm p50 - floor p50 (ms)", ra.WarmP50AddedMs},
		{"warm p50 - bridge floor p50 (ms)", ra.WarmP50AddedOverBridgeMs},
		{"serial: warm p50 - floor p50 (ms)", ra.SerialWarmP50AddedMs},
		{"serial: bridge floor p50 - floor p50 (ms)", ra.SerialBridgeP50AddedMs},
		{"warm req/s / floor req/s", ra.WarmRPSOverFloorRPS},
		{"warm req/s / bridge floor req/s", ra.WarmRPSOverBridgeRPS},
		{"bridge floor req/s / floor req/s", ra.BridgeRPSOverFloorRPS},
		{"cold p99 / warm p99", ra.ColdP99OverWarmP99},
		{"cold p50, no deps: platform part (ms)", ra.ColdPlatformP50Ms},
		{"cold p50 dayjs - no deps: require part (ms)", ra.ColdRequireP50Ms},
		{"naive p50 / cold p50", ra.NaiveP50OverColdP50},
	} {
		fmt.Fprintf(&b, "| %s | %s |\n", x.name, f3(x.v))
	}

	b.WriteString("\n### Targets (issue #7)\n\n| target | goal | measured | status |\n|---|---|--:|---|\n")
	for _, c := range r.Targets {
		v := "-"
		if c.Status != NotMeasured {
			v = f3(c.Value) + " " + c.Unit
			if c.Unit == "x" && strings.Contains(c.Goal, "%") {
				v = fmt.Sprintf("%.1f%%", c.Value*100)
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | **%s** |\n", c.Name, c.Goal, v, c.Status)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func row(b *strings.Builder, name string, s stats.Summary, note string) {
	fmt.Fprintf(b, "| %s | %d | %s | %s | %s | %s | %s |\n", name, s.N, f3(s.P50), f3(s.P90), f3(s.P99), f3(s.Max), note)
}

// f3 prints v with three decimals, trimmed for values above 100.
func f3(v float64) string {
	if v >= 100 || v <= -100 {
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.3f", v)
}

// cell keeps a message on one table row.
func cell(s string) string {
	s = strings.NewReplacer("\n", " ", "|", "/").Replace(s)
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}
