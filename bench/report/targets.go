package report

import (
	"fmt"

	"github.com/fnhook/fnhook/bench/stats"
)

// Kinds of cold function.
const (
	// KindDeps is a function with one built dependency (dayjs): the cold case of the targets.
	KindDeps = "dayjs"
	// KindNoDeps is a function without dependencies: the platform's own part of a cold call.
	KindNoDeps = "no-deps"
)

// The targets of the issues: fnhook#7, and the same kept by fnhook#16 (the hot path),
// which adds the gateway's cost per warm call and the one-at-a-time added latency.
const (
	ColdOverWarmMax     = 3.0   // cold p99 <= 3x warm p99
	ColdP99MaxMs        = 15.0  // cold p99 < 15 ms
	WarmAddedP50MaxMs   = 0.5   // warm p50 - floor p50 < 0.5 ms
	WarmRPSShareMin     = 0.40  // warm req/s >= 40% of floor req/s
	CreateBuiltP50MaxMs = 100.0 // PUT-to-ready with built modules, p50 < 100 ms

	GatewayCPUPerCallMaxUs    = 60.0 // fnhook#16: gateway CPU <= 60 µs per warm call
	GatewaySwitchesPerCallMax = 1.5  // fnhook#16: gateway context switches <= 1.5 per warm call
	SerialWarmAddedP50MaxMs   = 0.3  // fnhook#16: one at a time, warm p50 - floor p50 <= 0.3 ms
)

// UnitCalls is the unit of a check that counts calls.
const UnitCalls = "calls"

// Status of a target check.
const (
	Met         = "met"
	Missed      = "missed"
	NotMeasured = "not measured"
)

// Ratios compare the platform with its floors. All come from the Go load generator's
// figures; a ratio whose inputs are missing is 0.
type Ratios struct {
	// WarmP50OverFloorP50 is warm p50 / floor p50.
	WarmP50OverFloorP50 float64 `json:"warmP50OverFloorP50"`
	// WarmP50AddedMs is warm p50 - floor p50.
	WarmP50AddedMs float64 `json:"warmP50AddedMs"`
	// WarmP50AddedOverBridgeMs is warm p50 - bridge floor p50: what the gateway adds on
	// top of reaching a bridged process at all.
	WarmP50AddedOverBridgeMs float64 `json:"warmP50AddedOverBridgeMs"`
	// SerialWarmP50AddedMs is warm p50 - floor p50 one request at a time: what the
	// platform's hops add without queueing.
	SerialWarmP50AddedMs float64 `json:"serialWarmP50AddedMs"`
	// SerialBridgeP50AddedMs is bridge floor p50 - floor p50 one request at a time.
	SerialBridgeP50AddedMs float64 `json:"serialBridgeP50AddedMs"`
	// WarmRPSOverFloorRPS is warm req/s / floor req/s.
	WarmRPSOverFloorRPS float64 `json:"warmRpsOverFloorRps"`
	// WarmRPSOverBridgeRPS is warm req/s / bridge floor req/s.
	WarmRPSOverBridgeRPS float64 `json:"warmRpsOverBridgeRps"`
	// BridgeRPSOverFloorRPS is bridge floor req/s / floor req/s.
	BridgeRPSOverFloorRPS float64 `json:"bridgeRpsOverFloorRps"`
	// ColdP99OverWarmP99 is cold (dayjs) first-call p99 / warm p99 under load.
	ColdP99OverWarmP99 float64 `json:"coldP99OverWarmP99"`
	// ColdRequireP50Ms is cold p50 with dayjs minus cold p50 without dependencies: the
	// function's own require, seen through the platform.
	ColdRequireP50Ms float64 `json:"coldRequireP50Ms"`
	// ColdPlatformP50Ms is the cold p50 of the function without dependencies: the
	// platform's part of a cold call.
	ColdPlatformP50Ms float64 `json:"coldPlatformP50Ms"`
	// NaiveP50OverColdP50 is naive (node per request) p50 / cold (dayjs) p50.
	NaiveP50OverColdP50 float64 `json:"naiveP50OverColdP50"`
}

// Check is one target of the issue against the run.
type Check struct {
	Name   string  `json:"name"`
	Goal   string  `json:"goal"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	Status string  `json:"status"`
}

// Compute fills r.Ratios and r.Targets from the measured figures.
func (r *Results) Compute() {
	floor, bridge, warm := goLoad(r.Floor), goLoad(r.BridgeFloor), goLoad(r.Warm)
	cold := r.coldFirst(KindDeps)
	noDeps := r.coldFirst(KindNoDeps)

	var ra Ratios
	if floor != nil && warm != nil {
		ra.WarmP50OverFloorP50 = ratio(warm.Latency.P50, floor.Latency.P50)
		ra.WarmP50AddedMs = stats.Round3(warm.Latency.P50 - floor.Latency.P50)
		ra.WarmRPSOverFloorRPS = ratio(warm.RPS, floor.RPS)
	}
	if bridge != nil && warm != nil {
		ra.WarmP50AddedOverBridgeMs = stats.Round3(warm.Latency.P50 - bridge.Latency.P50)
		ra.WarmRPSOverBridgeRPS = ratio(warm.RPS, bridge.RPS)
	}
	if floor != nil && bridge != nil {
		ra.BridgeRPSOverFloorRPS = ratio(bridge.RPS, floor.RPS)
	}
	if sf, sw := serial(r.Floor), serial(r.Warm); sf != nil && sw != nil {
		ra.SerialWarmP50AddedMs = stats.Round3(sw.Latency.P50 - sf.Latency.P50)
	}
	if sf, sb := serial(r.Floor), serial(r.BridgeFloor); sf != nil && sb != nil {
		ra.SerialBridgeP50AddedMs = stats.Round3(sb.Latency.P50 - sf.Latency.P50)
	}
	if cold != nil && warm != nil {
		ra.ColdP99OverWarmP99 = ratio(cold.P99, warm.Latency.P99)
	}
	if noDeps != nil {
		ra.ColdPlatformP50Ms = noDeps.P50
		if cold != nil {
			ra.ColdRequireP50Ms = stats.Round3(cold.P50 - noDeps.P50)
		}
	}
	if cold != nil && r.Naive.Latency.N > 0 {
		ra.NaiveP50OverColdP50 = ratio(r.Naive.Latency.P50, cold.P50)
	}
	r.Ratios = ra
	// The checks compare unrounded values: 39.99% is not 40%.
	var rawShare, rawCold, rawAdded float64
	if floor != nil && warm != nil && floor.RPS > 0 {
		rawShare = warm.RPS / floor.RPS
		rawAdded = warm.Latency.P50 - floor.Latency.P50
	}
	if cold != nil && warm != nil && warm.Latency.P99 > 0 {
		rawCold = cold.P99 / warm.Latency.P99
	}

	checks := []Check{
		check("cold p99 vs warm p99", fmt.Sprintf("<= %gx", ColdOverWarmMax), "x",
			cold != nil && warm != nil && warm.Latency.P99 > 0, rawCold,
			func(v float64) bool { return v <= ColdOverWarmMax }),
		check("cold p99", fmt.Sprintf("< %g ms", ColdP99MaxMs), "ms",
			cold != nil, p99(cold), func(v float64) bool { return v < ColdP99MaxMs }),
		check("warm p50 added over floor", fmt.Sprintf("< %g ms", WarmAddedP50MaxMs), "ms",
			floor != nil && warm != nil, rawAdded, func(v float64) bool { return v < WarmAddedP50MaxMs }),
		check("warm req/s share of floor", fmt.Sprintf(">= %g%%", WarmRPSShareMin*100), "x",
			floor != nil && warm != nil && floor.RPS > 0, rawShare,
			func(v float64) bool { return v >= WarmRPSShareMin }),
		check("function create p50 (modules built)", fmt.Sprintf("< %g ms", CreateBuiltP50MaxMs), "ms",
			r.Create.Built.N > 0, r.Create.Built.P50, func(v float64) bool { return v < CreateBuiltP50MaxMs }),
	}
	// fnhook#16: the gateway's cost per warm call under the Go generator's load, and
	// what the platform adds to one call at a time.
	var gw *ProcessCost
	if warm != nil {
		gw = warm.Cost.Of(ProcGateway)
	}
	sf, sw := serial(r.Floor), serial(r.Warm)
	var rawSerialAdded float64
	if sf != nil && sw != nil {
		rawSerialAdded = sw.Latency.P50 - sf.Latency.P50
	}
	checks = append(checks,
		check("gateway CPU per warm call", fmt.Sprintf("<= %g µs", GatewayCPUPerCallMaxUs), "µs",
			gw != nil, cpuPerCall(gw), func(v float64) bool { return v <= GatewayCPUPerCallMaxUs }),
		check("gateway context switches per warm call", fmt.Sprintf("<= %g", GatewaySwitchesPerCallMax), "switches",
			gw != nil, switchesPerCall(gw), func(v float64) bool { return v <= GatewaySwitchesPerCallMax }),
		check("one at a time: warm p50 added over floor", fmt.Sprintf("<= %g ms", SerialWarmAddedP50MaxMs), "ms",
			sf != nil && sw != nil, rawSerialAdded, func(v float64) bool { return v <= SerialWarmAddedP50MaxMs }),
	)
	if t := r.tenantsTarget(); t != nil {
		// fnhook#15: with make up's defaults, 40 new tenants called 8 at a time all get 200,
		// first round and second. Calls not sent count as not answered.
		calls := t.First.Calls + t.First.NotSent + t.Second.Calls + t.Second.NotSent
		notOK := t.First.NotOK + t.First.NotSent + t.Second.NotOK + t.Second.NotSent
		checks = append(checks, check(
			fmt.Sprintf("%d new tenants, %d at a time, 2 rounds: answers other than 200", t.N, t.Concurrency),
			fmt.Sprintf("0 of %d", 2*t.N), UnitCalls,
			t.Error == "" && calls == 2*t.N, float64(notOK), func(v float64) bool { return v == 0 }))
	}
	r.Targets = checks
}

// tenantsTarget is the tenants run the target is checked on, or nil.
func (r *Results) tenantsTarget() *Tenants {
	for i := range r.Tenants {
		if r.Tenants[i].Target {
			return &r.Tenants[i]
		}
	}
	return nil
}

func check(name, goal, unit string, measured bool, v float64, ok func(float64) bool) Check {
	c := Check{Name: name, Goal: goal, Unit: unit, Value: v, Status: NotMeasured}
	if !measured {
		c.Value = 0
		return c
	}
	c.Status = Missed
	if ok(v) {
		c.Status = Met
	}
	return c
}

// goLoad is the Go generator's figures of s when some requests were answered.
func goLoad(s Server) *Load {
	if s.Go == nil || s.Go.Latency.N == 0 {
		return nil
	}
	return s.Go
}

// serial is the one-at-a-time figures of s when some requests were answered.
func serial(s Server) *Load {
	if s.Serial == nil || s.Serial.Latency.N == 0 {
		return nil
	}
	return s.Serial
}

func (r *Results) coldFirst(kind string) *stats.Summary {
	c := r.ColdOf(kind)
	if c == nil || c.First.N == 0 {
		return nil
	}
	return &c.First
}

func cpuPerCall(p *ProcessCost) float64 {
	if p == nil {
		return 0
	}
	return p.CPUUsPerCall
}

func switchesPerCall(p *ProcessCost) float64 {
	if p == nil {
		return 0
	}
	return p.SwitchesPerCall
}

func p99(s *stats.Summary) float64 {
	if s == nil {
		return 0
	}
	return s.P99
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return stats.Round3(a / b)
}
