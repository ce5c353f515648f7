package report

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/fnhook/fnhook/bench/stats"
)

// sample is a run where every target is met.
func sample() Results {
	return Results{
		Settings:    Settings{Concurrency: 16, WarmupS: 2, DurationS: 10, ColdN: 50},
		Floor:       Server{Go: &Load{Tool: "go", Requests: 100000, RPS: 10000, Latency: stats.Summary{N: 100000, P50: 1.0, P99: 3.0}}},
		BridgeFloor: Server{Go: &Load{Tool: "go", Requests: 80000, RPS: 8000, Latency: stats.Summary{N: 80000, P50: 1.1, P99: 3.5}}},
		Warm:        Server{Go: &Load{Tool: "go", Requests: 50000, RPS: 5000, Latency: stats.Summary{N: 50000, P50: 1.3, P99: 4.0}}},
		Cold: []Cold{
			{Kind: KindDeps, First: stats.Summary{N: 50, P50: 8, P99: 11}, Second: stats.Summary{N: 50, P50: 1, P99: 2}},
			{Kind: KindNoDeps, First: stats.Summary{N: 20, P50: 5, P99: 7}},
		},
		Naive:  Section{Latency: stats.Summary{N: 20, P50: 80, P99: 90}},
		Create: Create{Built: stats.Summary{N: 20, P50: 40, P99: 60}},
	}
}

func statuses(r Results) map[string]string {
	out := map[string]string{}
	for _, c := range r.Targets {
		out[c.Name] = c.Status
	}
	return out
}

func TestComputeTargets(t *testing.T) {
	const (
		coldRel = "cold p99 vs warm p99"
		coldAbs = "cold p99"
		added   = "warm p50 added over floor"
		share   = "warm req/s share of floor"
		create  = "function create p50 (modules built)"
	)
	tests := []struct {
		name   string
		change func(r *Results)
		want   map[string]string
	}{
		{"all met", func(*Results) {}, map[string]string{coldRel: Met, coldAbs: Met, added: Met, share: Met, create: Met}},
		{"cold p99 exactly 3x warm p99 is met", func(r *Results) { r.Cold[0].First.P99 = 12 },
			map[string]string{coldRel: Met, coldAbs: Met}},
		{"cold p99 over 3x warm p99", func(r *Results) { r.Cold[0].First.P99 = 12.5 },
			map[string]string{coldRel: Missed, coldAbs: Met}},
		{"cold p99 of 15 ms is missed", func(r *Results) { r.Cold[0].First.P99 = 15; r.Warm.Go.Latency.P99 = 10 },
			map[string]string{coldRel: Met, coldAbs: Missed}},
		{"added 0.5 ms is missed", func(r *Results) { r.Warm.Go.Latency.P50 = 1.5 },
			map[string]string{added: Missed}},
		{"throughput exactly 40% is met", func(r *Results) { r.Warm.Go.RPS = 4000 },
			map[string]string{share: Met}},
		{"throughput under 40%", func(r *Results) { r.Warm.Go.RPS = 3999 },
			map[string]string{share: Missed}},
		{"create 100 ms is missed", func(r *Results) { r.Create.Built.P50 = 100 },
			map[string]string{create: Missed}},
		{"no warm figures", func(r *Results) { r.Warm = Server{Error: "gateway down"} },
			map[string]string{coldRel: NotMeasured, coldAbs: Met, added: NotMeasured, share: NotMeasured, create: Met}},
		{"warm ran but every request failed", func(r *Results) { r.Warm.Go.Errors = r.Warm.Go.Requests; r.Warm.Go.Latency = stats.Summary{} },
			map[string]string{coldRel: NotMeasured, added: NotMeasured, share: NotMeasured}},
		{"no cold figures", func(r *Results) { r.Cold = nil },
			map[string]string{coldRel: NotMeasured, coldAbs: NotMeasured}},
		{"cold with only no-deps does not count", func(r *Results) { r.Cold = r.Cold[1:] },
			map[string]string{coldRel: NotMeasured, coldAbs: NotMeasured}},
		{"no floor", func(r *Results) { r.Floor = Server{} },
			map[string]string{added: NotMeasured, share: NotMeasured, coldRel: Met}},
		{"no create", func(r *Results) { r.Create = Create{Error: "boom"} },
			map[string]string{create: NotMeasured}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := sample()
			tt.change(&r)
			r.Compute()
			got := statuses(r)
			if len(got) != 8 {
				t.Fatalf("want 8 checks, got %v", got)
			}
			for name, want := range tt.want {
				if got[name] != want {
					t.Errorf("%s: %s, want %s (all: %v)", name, got[name], want, got)
				}
			}
		})
	}
}

func TestComputeRatios(t *testing.T) {
	tests := []struct {
		name   string
		change func(r *Results)
		want   Ratios
	}{
		{"full run", func(*Results) {}, Ratios{
			WarmP50OverFloorP50: 1.3, WarmP50AddedMs: 0.3, WarmP50AddedOverBridgeMs: 0.2,
			WarmRPSOverFloorRPS: 0.5, WarmRPSOverBridgeRPS: 0.625, BridgeRPSOverFloorRPS: 0.8,
			ColdP99OverWarmP99: 2.75, ColdRequireP50Ms: 3, ColdPlatformP50Ms: 5, NaiveP50OverColdP50: 10,
		}},
		{"serial figures", func(r *Results) {
			r.Floor.Serial = &Load{Requests: 10, Latency: stats.Summary{N: 10, P50: 0.5}}
			r.BridgeFloor.Serial = &Load{Requests: 10, Latency: stats.Summary{N: 10, P50: 0.6}}
			r.Warm.Serial = &Load{Requests: 10, Latency: stats.Summary{N: 10, P50: 1.9}}
		}, Ratios{
			WarmP50OverFloorP50: 1.3, WarmP50AddedMs: 0.3, WarmP50AddedOverBridgeMs: 0.2,
			SerialWarmP50AddedMs: 1.4, SerialBridgeP50AddedMs: 0.1,
			WarmRPSOverFloorRPS: 0.5, WarmRPSOverBridgeRPS: 0.625, BridgeRPSOverFloorRPS: 0.8,
			ColdP99OverWarmP99: 2.75, ColdRequireP50Ms: 3, ColdPlatformP50Ms: 5, NaiveP50OverColdP50: 10,
		}},
		{"no bridge floor", func(r *Results) { r.BridgeFloor = Server{Error: "x"} }, Ratios{
			WarmP50OverFloorP50: 1.3, WarmP50AddedMs: 0.3, WarmRPSOverFloorRPS: 0.5,
			ColdP99OverWarmP99: 2.75, ColdRequireP50Ms: 3, ColdPlatformP50Ms: 5, NaiveP50OverColdP50: 10,
		}},
		{"zero floor latency gives no ratio, not infinity", func(r *Results) { r.Floor.Go.Latency.P50 = 0 }, Ratios{
			WarmP50OverFloorP50: 0, WarmP50AddedMs: 1.3, WarmP50AddedOverBridgeMs: 0.2,
			WarmRPSOverFloorRPS: 0.5, WarmRPSOverBridgeRPS: 0.625, BridgeRPSOverFloorRPS: 0.8,
			ColdP99OverWarmP99: 2.75, ColdRequireP50Ms: 3, ColdPlatformP50Ms: 5, NaiveP50OverColdP50: 10,
		}},
		{"no cold without deps", func(r *Results) { r.Cold = r.Cold[:1] }, Ratios{
			WarmP50OverFloorP50: 1.3, WarmP50AddedMs: 0.3, WarmP50AddedOverBridgeMs: 0.2,
			WarmRPSOverFloorRPS: 0.5, WarmRPSOverBridgeRPS: 0.625, BridgeRPSOverFloorRPS: 0.8,
			ColdP99OverWarmP99: 2.75, NaiveP50OverColdP50: 10,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := sample()
			tt.change(&r)
			r.Compute()
			if r.Ratios != tt.want {
				t.Fatalf("ratios\n got %+v\nwant %+v", r.Ratios, tt.want)
			}
		})
	}
}

func TestFailed(t *testing.T) {
	tests := []struct {
		name   string
		change func(r *Results)
		want   []string
	}{
		{"clean run", func(*Results) {}, nil},
		{"missed targets are not failures", func(r *Results) { r.Cold[0].First.P99 = 500 }, nil},
		{"sections that failed", func(r *Results) {
			r.BridgeFloor.Error = "job not placed"
			r.Cold[1].Error = "no capacity"
			r.Create.NewModule = &NewModule{Module: "is-number@1.0.0", Error: "timed out"}
		}, []string{"bridge floor: job not placed", "cold no-deps: no capacity", "create (new module): timed out"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := sample()
			tt.change(&r)
			got := r.Failed()
			if strings.Join(got, ";") != strings.Join(tt.want, ";") {
				t.Fatalf("Failed() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestMarkdown(t *testing.T) {
	tests := []struct {
		name   string
		change func(r *Results)
		want   []string
	}{
		{"full run", func(r *Results) {
			r.Warm.Serial = &Load{Tool: "go", Requests: 500, RPS: 500, Latency: stats.Summary{N: 500, P50: 1.9}}
		}, []string{
			"| fnhook warm: gateway -> runner | go, 1 at a time | 500 | 1.900 |",
			"| floor: node on the host | go | 10000 | 1.000 |",
			"| fnhook warm: gateway -> runner | go | 5000 | 1.300 |",
			"| cold first call, dayjs | 50 | 8.000 |",
			"| warm p50 - floor p50 (ms) | 0.300 |",
			"| cold p99 | < 15 ms | 11.000 ms | **met** |",
			"| warm req/s share of floor | >= 40% | 50.0% | **met** |",
		}},
		{"failures are shown on one row", func(r *Results) {
			r.Warm = Server{Error: "resolve failed:\n503 | no_capacity"}
		}, []string{
			"| fnhook warm: gateway -> runner | - | failed: resolve failed: 503 / no_capacity |",
			"| cold p99 vs warm p99 | <= 3x | - | **not measured** |",
		}},
		{"new module create", func(r *Results) {
			r.Create.NewModule = &NewModule{Module: "left-pad@1.1.0", Ms: 4321.5, Status: "ready"}
		}, []string{"| new module left-pad@1.1.0 (npm install + upload) | 1 | 4321.5 | | | | status ready |"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := sample()
			tt.change(&r)
			r.Compute()
			var b strings.Builder
			if err := r.WriteMarkdown(&b); err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("markdown lacks %q:\n%s", w, b.String())
				}
			}
		})
	}
}

func TestJSONNames(t *testing.T) {
	r := sample()
	r.Compute()
	raw, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"warmP50AddedMs":0.3`, `"coldP99OverWarmP99":2.75`, `"p99Ms":11`, `"status":"met"`, `"bridgeFloor":`} {
		if !strings.Contains(string(raw), key) {
			t.Errorf("JSON lacks %s: %s", key, raw)
		}
	}
}
