// Package pool keeps a node's generic warm capacity: runners (one Nomad job each) that are
// starting or idle, ready for any tenant. It registers runners to keep an idle target
// ready within the node's capacity, learns where they listen from allocation updates,
// probes them until they answer, checks their health, recovers the runners a previous
// handler left, hands one out (Take) and ends one (End, with a typed EndReason).
//
// Which tenant a taken runner serves, and every call made to it for that tenant, belong
// to its Owner (services/handler/tenants); the pool only counts taken runners against the
// node's capacity, watches their allocations and health, and tells the Owner when one
// ended on its own. A runner that was taken never comes back to the pool.
package pool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fnhook/fnhook/libs/runnerapi"
	"github.com/fnhook/fnhook/services/handler/runnerjob"
)

// Jobs starts and stops runner jobs (runnerjob.Nomad).
type Jobs interface {
	NewJobID() string
	Register(ctx context.Context, jobID, token string) error
	Deregister(ctx context.Context, jobID string) error
	Alloc(ctx context.Context, jobID string) (*runnerjob.Alloc, error)
}

// Prober asks runners whether they answer and, with their token, whom they serve
// (runnerapi.Client).
type Prober interface {
	Health(ctx context.Context, address string) (runnerapi.Health, error)
	State(ctx context.Context, r runnerapi.Runner) (runnerapi.State, error)
}

// Owner holds the runners that serve tenants (tenants.Table). The pool calls it without
// holding its own lock, so it may call the pool back.
type Owner interface {
	// Adopt offers a recovered runner that says it serves st.Tenant with st.Functions;
	// false ends the runner (its tenant has another one).
	Adopt(r Runner, st runnerapi.State) bool
	// Lost says that a taken runner ended without its owner asking: its allocation
	// stopped, or it failed its health checks.
	Lost(jobID string, reason EndReason)
}

// Config sizes the pool and its timers.
type Config struct {
	// Secret derives each runner's token from its job id.
	Secret string
	// MaxRunners bounds all runners of the node (starting, idle and taken): the node's
	// capacity (see Capacity).
	MaxRunners int
	// MinIdle idle runners are kept ready at least; more while new tenants arrive (see
	// idleTarget).
	MinIdle int
	// RefillDelay postpones the refill after a take while other runners are still idle:
	// starting a runner takes a core for about a second here, and the new tenant's first
	// calls (load, require, run) should not compete with it. Zero refills at once.
	RefillDelay time.Duration
	// StartTimeout ends a runner that is not ready that long after its registration.
	StartTimeout time.Duration
	// HealthInterval is how often ready runners are asked for /healthz; HealthFailures
	// failures in a row end a runner.
	HealthInterval time.Duration
	HealthFailures int
}

func (c *Config) defaults() {
	if c.MaxRunners <= 0 {
		c.MaxRunners = 16
	}
	c.MinIdle = max(0, min(c.MinIdle, c.MaxRunners))
	if c.StartTimeout <= 0 {
		c.StartTimeout = 90 * time.Second
	}
	if c.HealthInterval <= 0 {
		c.HealthInterval = 2 * time.Second
	}
	if c.HealthFailures <= 0 {
		c.HealthFailures = 3
	}
}

// Runner is how to reach one runner.
type Runner struct {
	JobID   string
	Address string
	Token   string
}

// API returns how to reach the runner with runnerapi.
func (r Runner) API() runnerapi.Runner { return runnerapi.Runner{Address: r.Address, Token: r.Token} }

type state int

const (
	starting state = iota
	idle
	taken
)

func (s state) String() string {
	return [...]string{"starting", "idle", "taken"}[s]
}

type runner struct {
	jobID, token string
	address      string
	allocID      string
	state        state
	registered   time.Time // or found, for a recovered runner
	idleSince    time.Time
	healthFails  int
	probing      bool
	recovered    bool
	unprobed     bool // recovered and not asked yet
}

func (r *runner) snapshot() Runner {
	return Runner{JobID: r.jobID, Address: r.address, Token: r.token}
}

// Pool is a node's warm capacity. It is safe for concurrent use.
type Pool struct {
	cfg    Config
	jobs   Jobs
	prober Prober
	log    *slog.Logger
	now    func() time.Time
	m      *metrics

	mu       sync.Mutex
	byJob    map[string]*runner
	owner    Owner
	waiters  int           // callers of Take waiting for a runner
	changed  chan struct{} // closed and replaced when a runner may have become available
	kick     chan struct{}
	ctx      context.Context // Run's context, for the goroutines the pool starts
	checking atomic.Bool     // a health round is running
	wg       sync.WaitGroup
	ready    bool // Run started
	stopping bool // Run is returning: start no more goroutines under wg
	demand   demand
	// recovering counts recovered runners not probed yet; recovered is closed when it
	// reaches zero (or after recoveryGrace), so no tenant gets a second runner while
	// its old one is still being asked whom it serves.
	recovering   int
	recovered    chan struct{}
	recoveryOnce sync.Once
	// backoff after failed starts
	failUntil time.Time
	failDelay time.Duration
	// failedStarts counts runner starts that failed in a row (the job was not registered,
	// or the runner ended before it answered); a new runner that answers resets it.
	// lastFailure and lastFailureAt tell the latest one.
	failedStarts  int
	lastFailure   string
	lastFailureAt time.Time
}

// New returns a pool; Run starts it. reg receives its metrics (may be nil).
func New(cfg Config, jobs Jobs, prober Prober, log *slog.Logger, reg prometheus.Registerer) *Pool {
	cfg.defaults()
	p := &Pool{
		cfg: cfg, jobs: jobs, prober: prober, log: log, now: time.Now,
		byJob:   map[string]*runner{},
		changed: make(chan struct{}), kick: make(chan struct{}, 1), recovered: make(chan struct{}),
		demand: demand{tau: demandWindow},
	}
	p.m = newMetrics(p, reg)
	return p
}

// Capacity is the most runners the pool keeps on the node, taken ones included.
func (p *Pool) Capacity() int { return p.cfg.MaxRunners }

// Ready reports whether the pool has recovered its runners and can serve.
func (p *Pool) Ready() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.ready {
		return errors.New("the runner pool is not started")
	}
	select {
	case <-p.recovered:
		return nil
	default:
		return fmt.Errorf("the runner pool is recovering %d runners", p.recovering)
	}
}

// degradedAfter is how many runner starts must fail in a row before the pool reports
// itself degraded: one failure can be a passing hiccup, three mean no runner can start.
const degradedAfter = 3

// Degraded returns why the pool cannot give a new tenant a runner, or "" when it can: the
// last degradedAfter runner starts failed and no runner is idle. The handler still
// serves the tenants that have runners, so this is for /healthz's degraded answer
// (server.Server.Degraded), not for Ready.
func (p *Pool) Degraded() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.degradedLocked()
}

func (p *Pool) degradedLocked() string {
	if p.failedStarts < degradedAfter || p.pickIdleLocked() != nil {
		return ""
	}
	return "no runner could start: " + p.lastFailure
}

// startFailedLocked counts a failed runner start; detail says why.
func (p *Pool) startFailedLocked(detail string) {
	p.failedStarts++
	p.lastFailure, p.lastFailureAt = detail, p.now()
	p.failDelay = min(max(p.failDelay*2, 500*time.Millisecond), 30*time.Second)
	p.failUntil = p.now().Add(p.failDelay)
}

// Run keeps the pool until ctx ends: refills it, probes new runners until they answer,
// checks the health of ready ones and trims idle runners beyond the target. owner takes
// the recovered runners that serve tenants and hears of taken runners that ended (nil:
// recovered tenants' runners are ended). Run does not stop the runners when it returns:
// a restarted handler recovers them.
func (p *Pool) Run(ctx context.Context, owner Owner) {
	p.mu.Lock()
	p.ctx, p.owner = ctx, owner
	for _, r := range p.byJob {
		p.probeLocked(r)
	}
	p.ready = true
	if p.recovering == 0 {
		p.recoveryOnce.Do(func() { close(p.recovered) })
	}
	p.mu.Unlock()
	p.kickRefill()
	grace := time.AfterFunc(recoveryGrace, func() { p.recoveryOnce.Do(func() { close(p.recovered) }) })
	defer grace.Stop()

	health := time.NewTicker(p.cfg.HealthInterval)
	defer health.Stop()
	slow := time.NewTicker(2 * time.Second)
	defer slow.Stop()
	for {
		select {
		case <-ctx.Done():
			p.mu.Lock()
			p.stopping = true // no goroutine is added to wg after this
			p.mu.Unlock()
			p.wg.Wait()
			return
		case <-p.kick:
			p.refill()
		case <-slow.C:
			p.trimSurplus()
			p.refill()
			p.checkStarting(ctx)
		case <-health.C:
			// Rounds run beside the loop, so a slow runner never delays a refill.
			p.background(&p.checking, func() { p.checkHealth(ctx) })
		}
	}
}

// background runs fn in a goroutine unless the previous round flagged by busy still runs.
func (p *Pool) background(busy *atomic.Bool, fn func()) {
	if !busy.CompareAndSwap(false, true) {
		return
	}
	p.wg.Add(1)
	go func() {
		defer func() { busy.Store(false); p.wg.Done() }()
		fn()
	}()
}

// Counts returns how many runners are starting, idle and taken.
func (p *Pool) Counts() (startingN, idleN, takenN int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.countsLocked()
}

func (p *Pool) countsLocked() (startingN, idleN, takenN int) {
	for _, r := range p.byJob {
		switch r.state {
		case starting:
			startingN++
		case idle:
			idleN++
		case taken:
			takenN++
		}
	}
	return
}

// IdleJobs returns the job ids of the idle runners (tests and diagnostics), oldest first.
func (p *Pool) IdleJobs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*runner
	for _, r := range p.byJob {
		if r.state == idle {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].registered.Before(out[j].registered) })
	ids := make([]string, len(out))
	for i, r := range out {
		ids[i] = r.jobID
	}
	return ids
}

// pickIdleLocked returns the idle runner that has waited longest.
func (p *Pool) pickIdleLocked() *runner {
	var best *runner
	for _, r := range p.byJob {
		if r.state == idle && (best == nil || r.registered.Before(best.registered)) {
			best = r
		}
	}
	return best
}

func (p *Pool) kickRefill() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// notifyLocked wakes the callers waiting in Take.
func (p *Pool) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}
