package report

import (
	"cmp"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/fnhook/fnhook/bench/stats"
)

// Tenants is one run of "tenants served by one node" (fnhook#15): N new tenants, each
// with the plain function, called once each at a bounded concurrency (the first round),
// then once more each (the second round).
type Tenants struct {
	N           int `json:"n"`
	Concurrency int `json:"concurrency"`
	// Target marks the run the target is checked on (40 tenants, 8 at a time).
	Target bool  `json:"target"`
	First  Round `json:"first"`
	Second Round `json:"second"`
	// Memory is the runners present right after the first round.
	Memory *RunnerMemory `json:"memory,omitempty"`
	Error  string        `json:"error,omitempty"`
}

// Burst is N new tenants whose first calls are sent all at once.
type Burst struct {
	N     int    `json:"n"`
	First Round  `json:"first"`
	Error string `json:"error,omitempty"`
}

// Round is one call to each of a set of tenants.
type Round struct {
	// Calls counts calls sent; OK those answered 200; NotOK every other outcome,
	// calls that got no answer included.
	Calls int `json:"calls"`
	OK    int `json:"ok"`
	NotOK int `json:"notOk"`
	// NotSent counts calls not sent because the round reached its time limit.
	NotSent int `json:"notSent,omitempty"`
	// Outcomes counts calls by outcome: "200", "503 no_capacity", "no answer".
	Outcomes map[string]int `json:"outcomes"`
	// Cold counts answers the gateway marked x-fnhook-cold: 1.
	Cold int `json:"cold"`
	// NoRetryAfter counts 503 answers without a Retry-After header.
	NoRetryAfter int `json:"noRetryAfter"`
	// Latency is every answered call, whatever its status; LatencyOK the 200s alone.
	Latency   stats.Summary `json:"latency"`
	LatencyOK stats.Summary `json:"latencyOk"`
	// Seconds is the wall time of the whole round.
	Seconds float64 `json:"seconds"`
	// FirstError describes the first call that was not a 200.
	FirstError string `json:"firstError,omitempty"`
}

// Answer is the outcome of one call, as a Round counts it.
type Answer struct {
	Status     int    // 0 when the call got no answer
	Code       string // the error code of a JSON error answer
	RetryAfter bool   // the answer had a Retry-After header
	Cold       bool
	Latency    time.Duration
	Err        error  // why there was no answer
	Detail     string // for FirstError: the start of a non-200 body
}

// OutcomeNoAnswer is the outcome of a call that got no HTTP answer.
const OutcomeNoAnswer = "no answer"

// Outcome is the key a call is counted under: its status, with the error code of a
// non-200 answer ("503 no_capacity"), or OutcomeNoAnswer.
func (a Answer) Outcome() string {
	switch {
	case a.Err != nil || a.Status == 0:
		return OutcomeNoAnswer
	case a.Code != "" && a.Status != http.StatusOK:
		return fmt.Sprintf("%d %s", a.Status, a.Code)
	default:
		return fmt.Sprint(a.Status)
	}
}

// NewRound counts answers; notSent calls were never sent; wall is the round's duration.
func NewRound(answers []Answer, notSent int, wall time.Duration) Round {
	r := Round{Calls: len(answers), NotSent: notSent, Outcomes: map[string]int{}, Seconds: stats.Round3(wall.Seconds())}
	var all, ok []time.Duration
	for _, a := range answers {
		r.Outcomes[a.Outcome()]++
		if a.Err == nil && a.Status != 0 {
			all = append(all, a.Latency)
		}
		if a.Cold {
			r.Cold++
		}
		if a.Status == http.StatusServiceUnavailable && !a.RetryAfter {
			r.NoRetryAfter++
		}
		if a.Err == nil && a.Status == http.StatusOK {
			r.OK++
			ok = append(ok, a.Latency)
			continue
		}
		r.NotOK++
		if r.FirstError == "" {
			if a.Err != nil {
				r.FirstError = a.Err.Error()
			} else {
				r.FirstError = fmt.Sprintf("%s: %s", a.Outcome(), a.Detail)
			}
		}
	}
	r.Latency, r.LatencyOK = stats.Summarize(all), stats.Summarize(ok)
	return r
}

// NotOKOutcomes lists the outcomes other than 200 with their counts, most frequent
// first: "503 no_capacity: 28, no answer: 1"; "" when every call was answered 200.
func (r Round) NotOKOutcomes() string {
	keys := slices.Collect(maps.Keys(r.Outcomes))
	slices.SortFunc(keys, func(a, b string) int {
		return cmp.Or(cmp.Compare(r.Outcomes[b], r.Outcomes[a]), strings.Compare(a, b))
	})
	var parts []string
	for _, k := range keys {
		if k != fmt.Sprint(http.StatusOK) {
			parts = append(parts, fmt.Sprintf("%s: %d", k, r.Outcomes[k]))
		}
	}
	if r.NotSent > 0 {
		parts = append(parts, fmt.Sprintf("not sent (round time limit): %d", r.NotSent))
	}
	return strings.Join(parts, ", ")
}

// Runners is what one runner costs the node: its memory, and the CPU its start takes.
type Runners struct {
	// Memory is one entry per moment the runners were looked at.
	Memory []RunnerMemory `json:"memory"`
	Start  *RunnerStart   `json:"start,omitempty"`
	Error  string         `json:"error,omitempty"`
}

// RunnerMemory is the proportional set size (PSS) of the runners present at one moment:
// per runner, the sum over its nomad executor, nomad logmon (when it has one), the
// runner's parent node process and the tenant's child node process.
type RunnerMemory struct {
	When    string `json:"when"`
	Runners int    `json:"runners"`
	// PoolIdle and PoolAssigned are the handler's gauges at that moment (-1: unknown).
	PoolIdle     int `json:"poolIdle"`
	PoolAssigned int `json:"poolAssigned"`
	// PssMB is the mean per runner; Min and Max the smallest and largest runner.
	PssMB    float64 `json:"pssMB"`
	PssMinMB float64 `json:"pssMinMB"`
	PssMaxMB float64 `json:"pssMaxMB"`
	// RssMB is the mean RSS per runner (shared pages counted in full, for reference).
	RssMB float64 `json:"rssMB"`
	// RoleMB is the mean PSS per runner of each kind of process (executor, logmon,
	// parent, child); a runner without a logmon counts 0 for it.
	RoleMB map[string]float64 `json:"roleMB"`
	// WithLogmon counts runners that have a nomad logmon.
	WithLogmon int `json:"withLogmon"`
}

// RunnerStart is the CPU time spent to start one runner, measured while the handler's
// pool started Starts runners: the Nomad agent's CPU over that window less what it uses
// when idle, shared among the starts, plus each new runner's own processes since they
// started.
type RunnerStart struct {
	// Starts counts runner allocations Nomad created in the window; Measured those of
	// them found on the host with their processes.
	Starts   int `json:"starts"`
	Measured int `json:"measured"`
	// OtherStarts counts other allocations Nomad created in the window (another user of
	// this Nomad); the agent's CPU is shared among Starts + OtherStarts.
	OtherStarts int     `json:"otherStarts,omitempty"`
	WindowS     float64 `json:"windowS"`
	// CPUS is the total per start: AgentS + ExecutorS + LogmonS + TaskS.
	CPUS float64 `json:"cpuS"`
	// AgentS is (the agent's CPU over the window - AgentIdleCPUPerS * WindowS) /
	// (Starts + OtherStarts), the agent's CPU including the children it reaped (CNI
	// plugins).
	AgentS           float64 `json:"agentS"`
	AgentIdleCPUPerS float64 `json:"agentIdleCpuPerS"`
	// ExecutorS, LogmonS and TaskS are means over the measured runners: the executor's
	// and logmon's CPU since they started, and the task's cgroup CPU (the runner's parent
	// and the tenant's child node processes, from their start).
	ExecutorS float64 `json:"executorS"`
	LogmonS   float64 `json:"logmonS"`
	TaskS     float64 `json:"taskS"`
	// ReapedDuringWindow counts nomad processes of other allocations that exited in the
	// window; their CPU time, which the agent's then includes, is taken out of AgentS.
	ReapedDuringWindow int `json:"reapedDuringWindow,omitempty"`
	// TaskFromProcesses says the task's CPU came from its live processes' stat because
	// its cgroup could not be read.
	TaskFromProcesses bool   `json:"taskFromProcesses,omitempty"`
	Error             string `json:"error,omitempty"`
}
