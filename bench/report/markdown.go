package report

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/fnhook/fnhook/bench/proc"
	"github.com/fnhook/fnhook/bench/stats"
)

// WriteMarkdown renders r as Markdown tables: load, cold, create, then ratios and targets.
func (r *Results) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	s := r.Settings
	fmt.Fprintf(&b, "## fnhook bench, %s (%d CPUs, node %s, %.0f s)\n\n",
		r.StartedAt.UTC().Format("2006-01-02 15:04 UTC"), r.Host.CPUs, r.Host.Node, r.Seconds)

	if r.Ran(SectionFloor) || r.Ran(SectionBridge) || r.Ran(SectionWarm) {
		fmt.Fprintf(&b, "### Warm: closed loop, %d connections, %g s after %g s warm-up (and serial: 1 connection)\n\n", s.Concurrency, s.DurationS, s.WarmupS)
		b.WriteString("| server | tool | req/s | p50 ms | p90 ms | p99 ms | max ms | requests | errors |\n")
		b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|\n")
	}
	for _, row := range []struct {
		name, section string
		s             Server
	}{
		{"floor: node on the host", SectionFloor, r.Floor},
		{"bridge floor: node in a bridge-mode exec job", SectionBridge, r.BridgeFloor},
		{"fnhook warm: gateway -> runner", SectionWarm, r.Warm},
	} {
		if !r.Ran(row.section) {
			continue
		}
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

	if r.Ran(SectionWarm) {
		writeCosts(&b, "fnhook warm", r.Warm)
	}

	if r.Ran(SectionCold) || r.Ran(SectionNaive) {
		fmt.Fprintf(&b, "\n### Cold: fresh tenant, pool warm, modules on the node (N = %d per kind)\n\n", s.ColdN)
		b.WriteString("| case | N | p50 ms | p90 ms | p99 ms | max ms | notes |\n|---|--:|--:|--:|--:|--:|---|\n")
	}
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
	switch {
	case !r.Ran(SectionNaive):
	case r.Naive.Error != "":
		fmt.Fprintf(&b, "| naive: node spawned per request | 0 | | | | | failed: %s |\n", cell(r.Naive.Error))
	default:
		row(&b, "naive: node spawned per request", r.Naive.Latency, "reference")
	}
	if r.Ran(SectionCreate) {
		r.writeCreate(&b)
	}
	if r.Runners != nil {
		r.Runners.writeMarkdown(&b)
	}
	if r.Burst != nil {
		r.Burst.writeMarkdown(&b)
	}
	if len(r.Tenants) > 0 {
		writeTenants(&b, r.Tenants)
	}

	ra := r.Ratios
	showRatios := slices.ContainsFunc([]string{SectionFloor, SectionBridge, SectionWarm, SectionCold, SectionNaive, SectionCreate}, r.Ran)
	if showRatios {
		b.WriteString("\n### Ratios\n\n| ratio | value |\n|---|--:|\n")
	}
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
		if showRatios {
			fmt.Fprintf(&b, "| %s | %s |\n", x.name, f3(x.v))
		}
	}

	b.WriteString("\n### Targets (issues #7, #15 and #16)\n\n| target | goal | measured | status |\n|---|---|--:|---|\n")
	for _, c := range r.Targets {
		v := "-"
		if c.Status != NotMeasured {
			v = f3(c.Value) + " " + c.Unit
			switch {
			case c.Unit == "x" && strings.Contains(c.Goal, "%"):
				v = fmt.Sprintf("%.1f%%", c.Value*100)
			case c.Unit == UnitCalls:
				v = fmt.Sprintf("%.0f", c.Value)
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | **%s** |\n", c.Name, c.Goal, v, c.Status)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeCreate renders the function create table.
func (r *Results) writeCreate(b *strings.Builder) {
	b.WriteString("\n### Function create: PUT to `ready` (GET polled every 5 ms)\n\n")
	b.WriteString("| case | N | p50 ms | p90 ms | p99 ms | max ms | notes |\n|---|--:|--:|--:|--:|--:|---|\n")
	if r.Create.Error != "" && r.Create.Built.N == 0 {
		fmt.Fprintf(b, "| modules built | 0 | | | | | failed: %s |\n", cell(r.Create.Error))
	} else {
		row(b, "modules built", r.Create.Built, cell(r.Create.Error))
	}
	if nm := r.Create.NewModule; nm != nil {
		note := "status " + nm.Status
		if nm.Error != "" {
			note += ": " + cell(nm.Error)
		}
		fmt.Fprintf(b, "| new module %s (npm install + upload) | 1 | %s | | | | %s |\n", nm.Module, f3(nm.Ms), note)
	}
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

// writeMarkdown renders the runners' memory and start CPU.
func (ru *Runners) writeMarkdown(b *strings.Builder) {
	b.WriteString("\n### Runner cost: memory (PSS) and start CPU\n\n")
	if ru.Error != "" {
		fmt.Fprintf(b, "failed: %s\n\n", cell(ru.Error))
	}
	if len(ru.Memory) > 0 {
		b.WriteString("PSS per runner: nomad executor + nomad logmon (if any) + runner parent node + tenant child node, from /proc/<pid>/smaps_rollup.\n\n")
		b.WriteString("| when | runners | pool idle / assigned | PSS MB mean | min | max | executor | logmon | parent | child | with logmon | RSS MB mean |\n")
		b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, m := range ru.Memory {
			fmt.Fprintf(b, "| %s | %d | %s / %s | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %d | %.1f |\n",
				cell(m.When), m.Runners, gauge(m.PoolIdle), gauge(m.PoolAssigned), m.PssMB, m.PssMinMB, m.PssMaxMB,
				m.RoleMB[proc.RoleExecutor], m.RoleMB[proc.RoleLogmon], m.RoleMB[proc.RoleParent], m.RoleMB[proc.RoleChild], m.WithLogmon, m.RssMB)
		}
	}
	st := ru.Start
	if st == nil {
		return
	}
	fmt.Fprintf(b, "\nRunner start CPU: %d runner starts by the pool in a %.1f s window (%d of them found on the host",
		st.Starts, st.WindowS, st.Measured)
	if st.OtherStarts > 0 {
		fmt.Fprintf(b, "; %d other allocations started meanwhile and share the agent's CPU", st.OtherStarts)
	}
	if st.ReapedDuringWindow > 0 {
		fmt.Fprintf(b, "; %d nomad processes of other allocations exited meanwhile, their CPU taken out of the agent's", st.ReapedDuringWindow)
	}
	b.WriteString(").\n\n")
	if st.Error != "" {
		fmt.Fprintf(b, "failed: %s\n", cell(st.Error))
		return
	}
	task := "task: runner parent + child (their cgroup)"
	if st.TaskFromProcesses {
		task = "task: runner parent + child (live processes; cgroup unreadable)"
	}
	b.WriteString("| CPU seconds per runner start | s |\n|---|--:|\n")
	fmt.Fprintf(b, "| **total** | **%.3f** |\n", st.CPUS)
	fmt.Fprintf(b, "| nomad agent: its CPU over the window less %.3f s/s idle, / allocations started | %.3f |\n", st.AgentIdleCPUPerS, st.AgentS)
	fmt.Fprintf(b, "| nomad executor | %.3f |\n| nomad logmon | %.3f |\n| %s | %.3f |\n", st.ExecutorS, st.LogmonS, task, st.TaskS)
}

// gauge prints a pool gauge, "?" when it could not be read.
func gauge(v int) string {
	if v < 0 {
		return "?"
	}
	return fmt.Sprint(v)
}

// writeMarkdown renders the burst.
func (bu *Burst) writeMarkdown(b *strings.Builder) {
	fmt.Fprintf(b, "\n### Burst: %d new tenants, first calls sent all at once\n\n", bu.N)
	if bu.Error != "" {
		fmt.Fprintf(b, "failed: %s\n\n", cell(bu.Error))
	}
	roundHeader(b, "")
	roundRow(b, "", "first call", bu.First)
	if bu.First.FirstError != "" {
		fmt.Fprintf(b, "\n- First answer other than 200: %s\n", cell(bu.First.FirstError))
	}
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// writeTenants renders the tenant runs.
func writeTenants(b *strings.Builder, runs []Tenants) {
	b.WriteString("\n### Tenants served by one node: new tenants, each called twice (a first round, then a second)\n\n")
	roundHeader(b, "run")
	for _, t := range runs {
		name := fmt.Sprintf("%d tenants, %d at a time", t.N, t.Concurrency)
		if t.Target {
			name += " (target run)"
		}
		if t.Error != "" {
			fmt.Fprintf(b, "| %s | - | failed: %s |\n", name, cell(t.Error))
			if t.First.Calls == 0 {
				continue
			}
		}
		roundRow(b, name, "first", t.First)
		roundRow(b, name, "second", t.Second)
	}
	b.WriteString("\n")
	for _, t := range runs {
		if m := t.Memory; m != nil {
			fmt.Fprintf(b, "- Runners after the first round of %d tenants: %d (pool idle %s, assigned %s), PSS %.1f MB per runner (min %.1f, max %.1f).\n",
				t.N, m.Runners, gauge(m.PoolIdle), gauge(m.PoolAssigned), m.PssMB, m.PssMinMB, m.PssMaxMB)
		}
		if t.First.FirstError != "" || t.Second.FirstError != "" {
			fmt.Fprintf(b, "- %d tenants, first answer other than 200: %s\n", t.N, cell(firstOf(t.First.FirstError, t.Second.FirstError)))
		}
	}
}

func roundHeader(b *strings.Builder, first string) {
	if first != "" {
		b.WriteString("| " + first + " ")
	}
	b.WriteString("| round | calls | 200 | not 200 | not 200, by outcome | marked cold | 503 without Retry-After | p50 ms | p90 ms | p99 ms | max ms | p50 / p99 ms of the 200s | round s |\n")
	if first != "" {
		b.WriteString("|---")
	}
	b.WriteString("|---|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
}

func roundRow(b *strings.Builder, first, round string, r Round) {
	if first != "" {
		b.WriteString("| " + first + " ")
	}
	outcomes := r.NotOKOutcomes()
	if outcomes == "" {
		outcomes = "-"
	}
	fmt.Fprintf(b, "| %s | %d | %d | %d | %s | %d | %d | %s | %s | %s | %s | %s / %s | %.2f |\n",
		round, r.Calls, r.OK, r.NotOK+r.NotSent, cell(outcomes), r.Cold, r.NoRetryAfter,
		f3(r.Latency.P50), f3(r.Latency.P90), f3(r.Latency.P99), f3(r.Latency.Max),
		f3(r.LatencyOK.P50), f3(r.LatencyOK.P99), r.Seconds)
}
