// Package report holds the figures of one benchmark run, derives the ratios and target
// checks from them, and renders them as Markdown (for people) and JSON (for tools).
package report

import (
	"fmt"
	"slices"
	"time"

	"github.com/fnhook/fnhook/bench/stats"
)

// Results is everything one run measured. Sections that failed carry their error and
// leave their figures zero; Compute then marks the targets that depend on them as not
// measured.
type Results struct {
	StartedAt time.Time `json:"startedAt"`
	Seconds   float64   `json:"seconds"`
	Host      Host      `json:"host"`
	Settings  Settings  `json:"settings"`

	// Floor is a plain Node http server on the host running the function body.
	Floor Server `json:"floor"`
	// BridgeFloor is the same server in a bridge-mode Nomad exec job, through its mapped port.
	BridgeFloor Server `json:"bridgeFloor"`
	// Warm is the function through the fnhook gateway on an assigned runner.
	Warm Server `json:"warm"`

	// Cold is the first and second call of fresh tenants, one entry per function kind.
	Cold []Cold `json:"cold"`
	// RequireMs is require() of the cold function's dependency in a fresh node process on
	// the host, from the node's module cache: the function's own part of a cold call.
	RequireMs stats.Summary `json:"requireMs"`
	// RequireModule names the module RequireMs measured.
	RequireModule string `json:"requireModule,omitempty"`
	// Naive is a node process spawned per request that runs the function once.
	Naive Section `json:"naive"`
	// Create is PUT-to-ready of functions.
	Create Create `json:"create"`

	// Runners is what one runner costs: memory (PSS) and start CPU.
	Runners *Runners `json:"runners,omitempty"`
	// Burst is new tenants whose first calls are sent all at once.
	Burst *Burst `json:"burst,omitempty"`
	// Tenants is the runs of "tenants served by one node": the target run (40
	// tenants) and the larger one.
	Tenants []Tenants `json:"tenants,omitempty"`

	Ratios  Ratios  `json:"ratios"`
	Targets []Check `json:"targets"`
}

// Host describes the machine and runtimes of the run.
type Host struct {
	CPUs int    `json:"cpus"`
	Go   string `json:"go"`
	Node string `json:"node"`
	OS   string `json:"os"`
}

// Settings are the knobs of the run.
type Settings struct {
	Concurrency int     `json:"concurrency"`
	WarmupS     float64 `json:"warmupS"`
	DurationS   float64 `json:"durationS"`
	ColdN       int     `json:"coldN"`
	NaiveN      int     `json:"naiveN"`
	CreateN     int     `json:"createN"`
	Gateway     string  `json:"gateway"`
	// Only lists the sections run when not all were (FNHOOK_BENCH_ONLY).
	Only []string `json:"only,omitempty"`
	// TenantsN, TenantsTargetN and TenantsConcurrency are the tenant runs; BurstN the
	// burst; RunnerStarts the runner starts the start CPU is measured over.
	TenantsN           int `json:"tenantsN"`
	TenantsTargetN     int `json:"tenantsTargetN"`
	TenantsConcurrency int `json:"tenantsConcurrency"`
	BurstN             int `json:"burstN"`
	RunnerStarts       int `json:"runnerStarts"`
}

// Sections of a run, the names FNHOOK_BENCH_ONLY takes.
const (
	SectionFloor   = "floor"
	SectionBridge  = "bridge"
	SectionWarm    = "warm"
	SectionCold    = "cold"
	SectionNaive   = "naive"
	SectionCreate  = "create"
	SectionRunner  = "runner"
	SectionBurst   = "burst"
	SectionTenants = "tenants"
)

// Sections lists every section in the order a run measures them.
var Sections = []string{SectionFloor, SectionBridge, SectionWarm, SectionCold, SectionNaive, SectionCreate,
	SectionRunner, SectionBurst, SectionTenants}

// Ran reports whether the run measured section.
func (r *Results) Ran(section string) bool {
	return len(r.Settings.Only) == 0 || slices.Contains(r.Settings.Only, section)
}

// Load is one load-generator measurement of a server.
type Load struct {
	// Tool is "go" (the bench's own closed-loop generator) or "wrk".
	Tool        string        `json:"tool"`
	Concurrency int           `json:"concurrency"`
	Seconds     float64       `json:"seconds"`
	Requests    int64         `json:"requests"`
	Errors      int64         `json:"errors"`
	RPS         float64       `json:"rps"`
	Latency     stats.Summary `json:"latency"`
	// FirstError is the first failure seen, to say why Errors is not zero.
	FirstError string `json:"firstError,omitempty"`
	// Cost is what the platform's processes used per call (the warm case only).
	Cost *Cost `json:"cost,omitempty"`
}

// Server is a measured HTTP target.
type Server struct {
	URL string `json:"url,omitempty"`
	// Go is the Go generator at the run's concurrency: the figures of the targets.
	Go  *Load `json:"go,omitempty"`
	Wrk *Load `json:"wrk,omitempty"`
	// Serial is the Go generator with one connection and one request at a time: the
	// latency of each hop without queueing.
	Serial *Load  `json:"serial,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Cold is the cold calls of one kind of function.
type Cold struct {
	// Kind names the function: "dayjs" (one built dependency) or "no-deps".
	Kind   string        `json:"kind"`
	First  stats.Summary `json:"first"`
	Second stats.Summary `json:"second"`
	// NotCold counts first calls the gateway did not mark x-fnhook-cold: 1.
	NotCold int `json:"notCold"`
	// Errors counts tenants whose calls failed (they are left out of the figures).
	Errors int    `json:"errors"`
	Error  string `json:"error,omitempty"`
}

// Section is a latency summary that may have failed.
type Section struct {
	Latency stats.Summary `json:"latency"`
	Error   string        `json:"error,omitempty"`
}

// Create is PUT-to-ready of functions.
type Create struct {
	// Built is functions whose modules are all built already.
	Built stats.Summary `json:"built"`
	// NewModule is one function that needs a module nobody built yet.
	NewModule *NewModule `json:"newModule,omitempty"`
	Error     string     `json:"error,omitempty"`
}

// NewModule is the create of a function that needed a module build.
type NewModule struct {
	Module string  `json:"module"`
	Ms     float64 `json:"ms"`
	// Status is the function's final status (ready or failed).
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

// Failed lists the errors of every section, for the exit status of the run.
func (r *Results) Failed() []string {
	var out []string
	add := func(what, err string) {
		if err != "" {
			out = append(out, what+": "+err)
		}
	}
	add("floor", r.Floor.Error)
	add("bridge floor", r.BridgeFloor.Error)
	add("warm", r.Warm.Error)
	for _, c := range r.Cold {
		add("cold "+c.Kind, c.Error)
	}
	add("naive cold", r.Naive.Error)
	add("create", r.Create.Error)
	if r.Create.NewModule != nil {
		add("create (new module)", r.Create.NewModule.Error)
	}
	if r.Runners != nil {
		add("runners", r.Runners.Error)
		if r.Runners.Start != nil {
			add("runner start CPU", r.Runners.Start.Error)
		}
	}
	if r.Burst != nil {
		add("burst", r.Burst.Error)
	}
	for _, t := range r.Tenants {
		add(fmt.Sprintf("tenants (%d)", t.N), t.Error)
	}
	return out
}

// ColdOf returns the cold entry of kind, or nil.
func (r *Results) ColdOf(kind string) *Cold {
	for i := range r.Cold {
		if r.Cold[i].Kind == kind {
			return &r.Cold[i]
		}
	}
	return nil
}
