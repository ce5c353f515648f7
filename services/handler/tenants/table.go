// Package tenants owns each tenant's runner on this node. For every tenant it holds the
// lock that serialises work on it, the runner assigned to it, the function versions
// loaded there and every runner-protocol call made for it (assign, load, unload, state,
// its log stream). It answers resolves (the route of a tenant's function), re-reads a
// runner after a route failed, ends runners idle too long, evicts the least recently used
// runner with no call in flight when the node is full and a new tenant needs one, applies
// function and tenant events, and writes each runner's log lines into the handler's log.
//
// Generic warm capacity (starting, probing, recovering and ending runner jobs) is the
// pool's (services/handler/pool): a resolve crosses this table once, taking a runner
// from the pool and calling the runner, and the pool calls back only through pool.Owner
// (Adopt, Lost), never on a resolve's path.
package tenants

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	fnhook "github.com/fnhook/fnhook/libs"
	"github.com/fnhook/fnhook/libs/runnerapi"
	"github.com/fnhook/fnhook/services/handler/pool"
)

// Store reads function manifests (libs/store).
type Store interface {
	GetFunction(ctx context.Context, tenant, name string) (fnhook.Function, error)
}

// Modules puts modules into the node's cache (modcache.Cache).
type Modules interface {
	Ensure(ctx context.Context, deps map[string]string) error
}

// Pool is the node's warm capacity (pool.Pool).
type Pool interface {
	Take(ctx context.Context) (pool.Runner, error)
	End(jobID string, reason pool.EndReason, detail string)
	WaitRecovered(ctx context.Context) error
	Degraded() string
}

// Runners speaks the runner protocol (runnerapi.Client).
type Runners interface {
	Assign(ctx context.Context, r runnerapi.Runner, tenant string) error
	Load(ctx context.Context, r runnerapi.Runner, name string, f runnerapi.Function) (runnerapi.Loaded, error)
	Unload(ctx context.Context, r runnerapi.Runner, name string) error
	State(ctx context.Context, r runnerapi.Runner) (runnerapi.State, error)
	FollowLogs(ctx context.Context, r runnerapi.Runner, after int64, wait time.Duration, fn func(runnerapi.LogBatch) error) (int64, error)
}

// Config times the table's decisions.
type Config struct {
	// IdleTimeout ends a tenant's runner after that long without calls.
	IdleTimeout time.Duration
	// AssignWait bounds how long a tenant without a runner waits for one (to start, or
	// for a call in flight to end so that a runner can be evicted) before no_capacity.
	AssignWait time.Duration
}

func (c *Config) defaults() {
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 10 * time.Minute
	}
	if c.AssignWait <= 0 {
		c.AssignWait = 20 * time.Second
	}
}

// Table is the node's tenants and their runners. It is safe for concurrent use: work on
// one tenant (assigning, loading, events) is serialised; different tenants proceed in
// parallel. t.mu guards the maps and every runner's fields and is never held across a
// call to the pool, a runner or the store.
type Table struct {
	cfg     Config
	store   Store
	modules Modules
	pool    Pool
	runners Runners
	log     *slog.Logger
	now     func() time.Time
	m       *metrics

	mu      sync.Mutex
	tenants map[string]*tenant // while a tenant has a runner or someone holds or waits for its lock
	byJob   map[string]*runner
	ctx     context.Context // Run's, for the readers of runners' logs
	stopped bool            // Run is returning
	follows sync.WaitGroup  // readers of runners' logs

	// full is the queue of tenants waiting for room on a full node: one token, and the
	// goroutines blocked sending on it are served in arrival order. fullWaiters counts
	// them, so a newcomer queues behind them instead of taking the runner that an
	// eviction started for the tenant at the head.
	full        chan struct{}
	fullWaiters atomic.Int32
}

type tenant struct {
	name string
	lock chan struct{} // holds one token while someone works on the tenant
	refs int           // holders and waiters of lock
	run  *runner       // nil: no runner
}

// runner is a tenant's runner as the table knows it.
type runner struct {
	pool.Runner
	tenant    string
	functions map[string]int // loaded version of each function
	// lastResolve is when a resolve last answered this runner's route; lastUsed is the
	// latest call the table knows of (its last resolve, or what the runner reported).
	lastResolve time.Time
	lastUsed    time.Time
	// busyUntil: a call routed here by a resolve may run until then, by the function's
	// timeout (see usedLocked); what decides for runners that do not report their calls.
	busyUntil time.Time
	// stopLogs stops the reader of its log stream; detached is set once it left its tenant.
	stopLogs context.CancelFunc
	detached atomic.Bool
}

// New returns a Table; Run reads runners' logs and reaps idle runners. reg receives its
// metrics (may be nil).
func New(cfg Config, store Store, modules Modules, p Pool, runners Runners, log *slog.Logger, reg prometheus.Registerer) *Table {
	cfg.defaults()
	return &Table{
		cfg: cfg, store: store, modules: modules, pool: p, runners: runners, log: log, now: time.Now,
		m: newMetrics(reg), tenants: map[string]*tenant{}, byJob: map[string]*runner{},
		full: make(chan struct{}, 1),
	}
}

// lock takes the tenant's lock, waiting until ctx ends; waited tells whether it had to
// wait (someone else was assigning or loading for the tenant).
func (t *Table) lock(ctx context.Context, name string) (tn *tenant, waited bool, err error) {
	t.mu.Lock()
	tn = t.tenants[name]
	if tn == nil {
		tn = &tenant{name: name, lock: make(chan struct{}, 1)}
		t.tenants[name] = tn
	}
	tn.refs++
	t.mu.Unlock()
	select {
	case tn.lock <- struct{}{}:
		return tn, false, nil
	default:
	}
	select {
	case tn.lock <- struct{}{}:
		return tn, true, nil
	case <-ctx.Done():
		t.release(tn)
		return nil, true, ctx.Err()
	}
}

func (t *Table) unlock(tn *tenant) {
	<-tn.lock
	t.release(tn)
}

func (t *Table) release(tn *tenant) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tn.refs--
	t.forgetLocked(tn)
}

// forgetLocked drops the entry of a tenant with no runner that no one works on.
func (t *Table) forgetLocked(tn *tenant) {
	if tn.refs == 0 && tn.run == nil && t.tenants[tn.name] == tn {
		delete(t.tenants, tn.name)
	}
}

// attachLocked gives run to its tenant and starts reading its logs.
func (t *Table) attachLocked(tn *tenant, run *runner) {
	tn.run = run
	t.byJob[run.JobID] = run
	t.followLocked(run)
}

// detachLocked takes run from its tenant; false when it was no longer the tenant's.
func (t *Table) detachLocked(run *runner) bool {
	tn := t.tenants[run.tenant]
	if tn == nil || tn.run != run {
		return false
	}
	tn.run = nil
	delete(t.byJob, run.JobID)
	t.forgetLocked(tn)
	t.unfollowLocked(run)
	return true
}

// current returns the tenant's runner, or nil.
func (t *Table) current(tn *tenant) *runner {
	t.mu.Lock()
	defer t.mu.Unlock()
	return tn.run
}

// loaded returns the version of function fn loaded on run (0: none).
func (t *Table) loaded(run *runner, fn string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return run.functions[fn]
}

// drop takes run from its tenant and ends it.
func (t *Table) drop(run *runner, reason pool.EndReason, detail string) {
	t.mu.Lock()
	t.detachLocked(run)
	t.mu.Unlock()
	t.pool.End(run.JobID, reason, detail)
	t.log.Info("tenant runner ended", "tenant", run.tenant, "job", run.JobID, "reason", reason.String(), "detail", detail)
}

// Adopt takes a runner that a previous handler assigned (pool.Owner): the tenant keeps it
// with the functions it reports, unless the tenant has a runner already.
func (t *Table) Adopt(r pool.Runner, st runnerapi.State) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	tn := t.tenants[st.Tenant]
	if tn == nil {
		tn = &tenant{name: st.Tenant, lock: make(chan struct{}, 1)}
		t.tenants[st.Tenant] = tn
	}
	if tn.run != nil {
		return false
	}
	now := t.now()
	run := &runner{Runner: r, tenant: st.Tenant, functions: make(map[string]int, len(st.Functions)), lastUsed: now}
	for fn, v := range st.Functions {
		run.functions[fn] = v
	}
	if st.IdleMs != nil {
		run.lastUsed = now.Add(-time.Duration(*st.IdleMs) * time.Millisecond)
	}
	t.attachLocked(tn, run)
	return true
}

// Lost forgets a runner that ended without the table asking (pool.Owner): the tenant's
// next resolve assigns a fresh one.
func (t *Table) Lost(jobID string, reason pool.EndReason) {
	t.mu.Lock()
	run := t.byJob[jobID]
	lost := run != nil && t.detachLocked(run)
	t.mu.Unlock()
	if lost {
		t.log.Info("tenant lost its runner", "tenant", run.tenant, "job", jobID, "reason", reason.String())
	}
}
