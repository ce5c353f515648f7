package report

import (
	"strings"
	"testing"
	"time"

	"github.com/fnhook/fnhook/bench/proc"
	"github.com/fnhook/fnhook/bench/stats"
)

func TestPerCall(t *testing.T) {
	d := proc.Usage{CPU: 1500 * time.Millisecond, Voluntary: 30000, Involuntary: 1000}
	got := PerCall(ProcGateway, []int{300}, d, 20000)
	if got.CPUUsPerCall != 75 || got.SwitchesPerCall != 1.55 || got.CPUMs != 1500 || got.Voluntary != 30000 || got.Involuntary != 1000 {
		t.Fatalf("PerCall = %+v, want 75 µs, 1.55 switches per call, 1500 ms in all", got)
	}
	if z := PerCall(ProcGateway, nil, d, 0); z.CPUUsPerCall != 0 || z.SwitchesPerCall != 0 || z.CPUMs != 1500 {
		t.Fatalf("no calls: %+v, want totals only", z)
	}
}

// warmWith is a run whose warm case cost the gateway cpuUs and switches per call, and
// whose one-at-a-time p50s are floorMs and warmMs.
func warmWith(cpuUs, switches, floorMs, warmMs float64) Results {
	loadOf := func(p50 float64) *Load { return &Load{RPS: 1000, Latency: stats.Summary{N: 10, P50: p50, P99: p50}} }
	r := Results{
		Floor: Server{Go: loadOf(0.1), Serial: loadOf(floorMs)},
		Warm:  Server{Go: loadOf(0.5), Serial: loadOf(warmMs)},
	}
	r.Warm.Go.Cost = &Cost{Calls: 1000, Processes: []ProcessCost{
		{Name: ProcRunnerParent, CPUUsPerCall: 500, SwitchesPerCall: 9},
		{Name: ProcGateway, CPUUsPerCall: cpuUs, SwitchesPerCall: switches},
	}}
	return r
}

func TestTargetsOfIssue16(t *testing.T) {
	tests := []struct {
		name                      string
		r                         Results
		cpu, switches, serialDiff string
	}{
		{"all met, CPU and switches at the limits", warmWith(60, 1.5, 0.1, 0.35), Met, Met, Met},
		{"all missed", warmWith(60.5, 1.51, 0.1, 0.45), Missed, Missed, Missed},
		{"CPU missed only", warmWith(250, 1.0, 0.13, 0.2), Missed, Met, Met},
		{"nothing measured", Results{}, NotMeasured, NotMeasured, NotMeasured},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.r.Compute()
			got := map[string]string{}
			for _, c := range tt.r.Targets {
				got[c.Name] = c.Status
			}
			for name, want := range map[string]string{
				"gateway CPU per warm call":                tt.cpu,
				"gateway context switches per warm call":   tt.switches,
				"one at a time: warm p50 added over floor": tt.serialDiff,
			} {
				if got[name] != want {
					t.Errorf("%s: %q, want %q", name, got[name], want)
				}
			}
		})
	}
}

func TestMarkdownShowsCost(t *testing.T) {
	r := warmWith(75, 1.55, 0.1, 0.4)
	r.Warm.Go.Tool = "go"
	r.Warm.Go.Cost.Processes[1].PIDs = []int{300}
	r.Compute()
	var b strings.Builder
	if err := r.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"### fnhook warm: CPU time and context switches per call",
		"| go | 1000 | 1000 | gateway | 300 | 75.0 | 1.55 |",
		"| gateway CPU per warm call | <= 60 µs | 75.000 µs | **missed** |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("markdown lacks %q:\n%s", want, out)
		}
	}
}
