// Package pool keeps a node's runners: a warm pool of idle, generic runners (at least
// MinIdle, at most MaxRunners in all) and the runners assigned to tenants, one runner per
// tenant for life. It starts runners through Jobs (one Nomad job each), learns where they
// listen from allocation updates, tells them ready by asking them, and ends a runner by
// stopping its job: after IdleTimeout without use, when its tenant is deleted, or when it
// fails its health. A runner that held tenant code never returns to the pool.
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

	fnhook "github.com/fnhook/fnhook/libs"
	"github.com/fnhook/fnhook/libs/handlerapi"
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

// Runners speaks the runner protocol (runnerapi.Client).
type Runners interface {
	Health(ctx context.Context, address string) (runnerapi.Health, error)
	State(ctx context.Context, r runnerapi.Runner) (runnerapi.State, error)
	Assign(ctx context.Context, r runnerapi.Runner, tenant string) error
}

// Config sizes the pool and its timers.
type Config struct {
	// Secret derives each runner's token from its job id.
	Secret string
	// MinIdle idle runners are kept ready; MaxRunners bounds all runners of the node.
	MinIdle    int
	MaxRunners int
	// IdleTimeout ends a tenant's runner after that long without use.
	IdleTimeout time.Duration
	// AssignWait bounds how long Acquire waits for a runner when none is idle.
	AssignWait time.Duration
	// RefillDelay postpones the refill after an assignment while other runners are still
	// idle: starting a runner takes a core for about a second here, and the assigned
	// tenant's first calls (load, require, run) should not compete with it. Zero refills
	// at once.
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
	if c.MinIdle > c.MaxRunners {
		c.MinIdle = c.MaxRunners
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 10 * time.Minute
	}
	if c.AssignWait <= 0 {
		c.AssignWait = 20 * time.Second
	}
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

// Runner is a snapshot of one runner, as callers use it.
type Runner struct {
	JobID   string
	Address string
	Token   string
	Tenant  string
}

// API returns how to reach the runner with runnerapi.
func (r Runner) API() runnerapi.Runner { return runnerapi.Runner{Address: r.Address, Token: r.Token} }

type state int

const (
	starting state = iota
	idle
	assigned
)

func (s state) String() string {
	return [...]string{"starting", "idle", "assigned"}[s]
}

type runner struct {
	jobID, token string
	address      string
	allocID      string
	state        state
	tenant       string
	functions    map[string]int
	registered   time.Time // or found, for a recovered runner
	lastUsed     time.Time
	healthFails  int
	probing      bool
	recovered    bool
	unprobed     bool // recovered and not asked yet
}

func (r *runner) snapshot() Runner {
	return Runner{JobID: r.jobID, Address: r.address, Token: r.token, Tenant: r.tenant}
}

// ErrNoCapacity is returned by Acquire when no runner could be had within AssignWait.
var ErrNoCapacity = &fnhook.Error{Code: handlerapi.CodeNoCapacity, Status: 503, Message: "no runner is available on this node right now; retry shortly"}

// Pool is a node's set of runners. It is safe for concurrent use.
type Pool struct {
	cfg     Config
	jobs    Jobs
	runners Runners
	log     *slog.Logger
	now     func() time.Time
	m       *metrics

	mu       sync.Mutex
	byJob    map[string]*runner
	byTenant map[string]*runner
	waiters  int
	changed  chan struct{} // closed and replaced when a runner may have become available
	kick     chan struct{}
	ctx      context.Context // Run's context, for the goroutines the pool starts
	checking atomic.Bool     // a health round is running
	reaping  atomic.Bool     // an idle round is running
	wg       sync.WaitGroup
	ready    bool // Run started
	stopping bool // Run is returning: start no more goroutines under wg
	// recovering counts recovered runners not probed yet; recovered is closed when it
	// reaches zero (or after recoveryGrace), so no tenant gets a second runner while
	// its old one is still being asked whom it serves.
	recovering   int
	recovered    chan struct{}
	recoveryOnce sync.Once
	// backoff after failed registrations
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
func New(cfg Config, jobs Jobs, runners Runners, log *slog.Logger, reg prometheus.Registerer) *Pool {
	cfg.defaults()
	p := &Pool{
		cfg: cfg, jobs: jobs, runners: runners, log: log, now: time.Now,
		byJob: map[string]*runner{}, byTenant: map[string]*runner{},
		changed: make(chan struct{}), kick: make(chan struct{}, 1), recovered: make(chan struct{}),
	}
	p.m = newMetrics(p, reg)
	return p
}

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

// startFailedLocked counts a failed runner start; reason says why.
func (p *Pool) startFailedLocked(reason string) {
	p.failedStarts++
	p.lastFailure, p.lastFailureAt = reason, p.now()
}

// recoveryGrace bounds how long recovered runners may take to answer before the pool
// serves without them (they are then ended if they never answer).
const recoveryGrace = 15 * time.Second

func (p *Pool) recoveredLocked(r *runner) {
	if !r.unprobed {
		return
	}
	r.unprobed = false
	p.recovering--
	if p.recovering <= 0 {
		p.recoveryOnce.Do(func() { close(p.recovered) })
	}
}

// Recover adopts the runner jobs a previous handler of this node left: their tokens are
// recomputed, and each is asked for its state once it answers, so tenants keep their
// runners across a handler restart and idle runners rejoin the pool. Call it before Run.
func (p *Pool) Recover(jobs []runnerjob.Job) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	for _, j := range jobs {
		if p.byJob[j.ID] != nil {
			continue
		}
		if j.Dead || (j.Alloc != nil && j.Alloc.Terminal) {
			p.stopLater(j.ID, "found stopped") // stops if need be, then purges
			continue
		}
		r := &runner{jobID: j.ID, token: runnerapi.Token(p.cfg.Secret, j.ID), state: starting,
			registered: now, lastUsed: now, recovered: true, unprobed: true, functions: map[string]int{}}
		if j.Alloc != nil {
			r.address, r.allocID = j.Alloc.Address, j.Alloc.ID
		}
		p.byJob[j.ID] = r
		p.recovering++
	}
	p.log.Info("recovering runners", "jobs", len(p.byJob))
}

// Run keeps the pool until ctx ends: refills it, probes new runners until they answer,
// checks the health of ready ones and ends idle tenants' runners. It does not stop the
// runners when it returns: a restarted handler recovers them.
func (p *Pool) Run(ctx context.Context) {
	p.mu.Lock()
	p.ctx = ctx
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
	reapEvery := min(max(p.cfg.IdleTimeout/4, 100*time.Millisecond), 30*time.Second)
	reap := time.NewTicker(reapEvery)
	defer reap.Stop()
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
			p.refill()
			p.checkStarting(ctx)
		case <-health.C:
			// Rounds run beside the loop, so a slow runner never delays a refill.
			p.background(&p.checking, func() { p.checkHealth(ctx) })
		case <-reap.C:
			p.background(&p.reaping, func() { p.reapIdle(ctx) })
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

// Observe takes an allocation update of one of the pool's runner jobs (from the Nomad
// event stream): it learns the runner's address, and ends runners whose allocation
// stopped.
func (p *Pool) Observe(jobID string, a runnerjob.Alloc) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.byJob[jobID]
	if r == nil {
		return
	}
	if r.allocID != "" && a.ID != r.allocID {
		return // not the allocation we know (there is only one per job)
	}
	if a.Terminal {
		reason := "allocation " + a.ClientStatus
		if a.Failure != "" {
			// Nomad's own words (a driver's error) tell the operator what to fix.
			reason += ": " + a.Failure
		}
		p.endLocked(r, reason)
		return
	}
	r.allocID = a.ID
	if r.address == "" && a.Address != "" {
		r.address = a.Address
		p.probeLocked(r)
	}
}

// Resync re-reads the allocations of runners still starting (after missed events).
func (p *Pool) Resync() {
	p.mu.Lock()
	ctx := p.ctx
	p.mu.Unlock()
	if ctx != nil {
		p.checkStarting(ctx)
	}
}

// Lookup returns the tenant's runner, if it has one.
func (p *Pool) Lookup(tenant string) (Runner, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.byTenant[tenant]
	if r == nil {
		return Runner{}, false
	}
	return r.snapshot(), true
}

// Loaded returns the tenant's runner and the version of function fn loaded there (0 when
// none), and marks the runner used.
func (p *Pool) Loaded(tenant, fn string) (Runner, int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.byTenant[tenant]
	if r == nil {
		return Runner{}, 0, false
	}
	r.lastUsed = p.now()
	return r.snapshot(), r.functions[fn], true
}

// Peek is Loaded without marking the runner used (for events, which are no calls).
func (p *Pool) Peek(tenant, fn string) (Runner, int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.byTenant[tenant]
	if r == nil {
		return Runner{}, 0, false
	}
	return r.snapshot(), r.functions[fn], true
}

// SetLoaded records that version of fn is loaded on the runner (0: unloaded).
func (p *Pool) SetLoaded(jobID, fn string, version int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.byJob[jobID]
	if r == nil {
		return
	}
	if version <= 0 {
		delete(r.functions, fn)
	} else if version > r.functions[fn] {
		r.functions[fn] = version
	}
}

// SyncLoaded replaces the runner's loaded functions with what the runner reported (it
// unloads a function it cannot keep after a crash).
func (p *Pool) SyncLoaded(jobID string, functions map[string]int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.byJob[jobID]
	if r == nil {
		return
	}
	r.functions = make(map[string]int, len(functions))
	for fn, v := range functions {
		r.functions[fn] = v
	}
}

// Acquire returns the tenant's runner, assigning it an idle one if it has none (assigned
// is then true). Without an idle runner it waits up to AssignWait while more start, and
// fails with ErrNoCapacity. Callers serialise Acquire per tenant.
func (p *Pool) Acquire(ctx context.Context, tenant string) (r Runner, assignedNow bool, err error) {
	timer := time.NewTimer(p.cfg.AssignWait)
	defer timer.Stop()
	select {
	case <-p.recovered:
	case <-ctx.Done():
		return Runner{}, false, ctx.Err()
	case <-timer.C:
		return Runner{}, false, ErrNoCapacity
	}
	for tries := 0; ; tries++ {
		p.mu.Lock()
		if cur := p.byTenant[tenant]; cur != nil {
			cur.lastUsed = p.now()
			p.mu.Unlock()
			return cur.snapshot(), false, nil
		}
		if cand := p.pickIdleLocked(); cand != nil {
			cand.state, cand.tenant, cand.lastUsed = assigned, tenant, p.now()
			p.byTenant[tenant] = cand
			snap := cand.snapshot()
			if p.cfg.RefillDelay > 0 && p.pickIdleLocked() != nil {
				time.AfterFunc(p.cfg.RefillDelay, p.kickRefill)
			} else {
				p.kickLocked()
			}
			p.mu.Unlock()
			p.m.assigns.Inc()
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := p.runners.Assign(actx, snap.API(), tenant)
			cancel()
			if err == nil {
				return snap, true, nil
			}
			p.End(snap.JobID, fmt.Sprintf("assign failed: %v", err))
			if ctx.Err() != nil {
				return Runner{}, false, ctx.Err()
			}
			if tries > p.cfg.MaxRunners {
				return Runner{}, false, fmt.Errorf("assign a runner to %s: %w", tenant, err)
			}
			continue
		}
		starting, total := p.countLocked()
		if starting == 0 && total >= p.cfg.MaxRunners {
			p.mu.Unlock()
			p.m.noCapacity.Inc()
			return Runner{}, false, ErrNoCapacity
		}
		p.waiters++
		ch := p.changed
		p.kickLocked()
		p.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			p.mu.Lock()
			p.waiters--
			p.mu.Unlock()
			p.m.noCapacity.Inc()
			return Runner{}, false, ErrNoCapacity
		case <-ctx.Done():
			p.mu.Lock()
			p.waiters--
			p.mu.Unlock()
			return Runner{}, false, ctx.Err()
		}
		p.mu.Lock()
		p.waiters--
		p.mu.Unlock()
	}
}

// End stops the runner's job and forgets it; the pool refills.
func (p *Pool) End(jobID, reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r := p.byJob[jobID]; r != nil {
		p.endLocked(r, reason)
	}
}

// EndTenant ends the tenant's runner, if it has one.
func (p *Pool) EndTenant(tenant, reason string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.byTenant[tenant]
	if r != nil {
		p.endLocked(r, reason)
	}
	return r != nil
}

// Counts returns how many runners are starting, idle and assigned.
func (p *Pool) Counts() (startingN, idleN, assignedN int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.byJob {
		switch r.state {
		case starting:
			startingN++
		case idle:
			idleN++
		case assigned:
			assignedN++
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

func (p *Pool) countLocked() (startingN, total int) {
	for _, r := range p.byJob {
		if r.state == starting {
			startingN++
		}
	}
	return startingN, len(p.byJob)
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

func (p *Pool) kickLocked() { p.kickRefill() }

// notifyLocked wakes the waiters of Acquire.
func (p *Pool) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// toStart is how many runners to register now: enough to have MinIdle idle or starting,
// plus one per waiting Acquire, within MaxRunners.
func toStart(idleN, startingN, assignedN, waiters, minIdle, maxRunners int) int {
	want := minIdle + waiters - idleN - startingN
	room := maxRunners - idleN - startingN - assignedN
	return max(0, min(want, room))
}

func (p *Pool) refill() {
	p.mu.Lock()
	if p.ctx == nil || p.ctx.Err() != nil || p.now().Before(p.failUntil) {
		p.mu.Unlock()
		return
	}
	var idleN, startingN, assignedN int
	for _, r := range p.byJob {
		switch r.state {
		case starting:
			startingN++
		case idle:
			idleN++
		case assigned:
			assignedN++
		}
	}
	n := toStart(idleN, startingN, assignedN, p.waiters, p.cfg.MinIdle, p.cfg.MaxRunners)
	ctx := p.ctx
	var started []*runner
	for range n {
		id := p.jobs.NewJobID()
		r := &runner{jobID: id, token: runnerapi.Token(p.cfg.Secret, id), state: starting,
			registered: p.now(), functions: map[string]int{}}
		// Known before the job exists, so its allocation events are not missed.
		p.byJob[id] = r
		started = append(started, r)
	}
	p.mu.Unlock()
	for _, r := range started {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := p.jobs.Register(rctx, r.jobID, r.token)
			cancel()
			p.mu.Lock()
			defer p.mu.Unlock()
			if err != nil {
				p.m.starts.WithLabelValues("failed").Inc()
				p.startFailedLocked(err.Error())
				p.log.Error("register runner job", "job", r.jobID, "err", err, "failed_in_a_row", p.failedStarts)
				if p.byJob[r.jobID] == r {
					delete(p.byJob, r.jobID)
				}
				p.failDelay = min(max(p.failDelay*2, 500*time.Millisecond), 30*time.Second)
				p.failUntil = p.now().Add(p.failDelay)
				p.notifyLocked()
				return
			}
			p.m.starts.WithLabelValues("registered").Inc()
		}()
	}
}

// probeLocked starts asking a starting runner whose address is known until it answers.
func (p *Pool) probeLocked(r *runner) {
	if r.probing || r.address == "" || r.state != starting || p.ctx == nil || p.stopping {
		return
	}
	r.probing = true
	ctx := p.ctx
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.probe(ctx, r)
	}()
}

// probe polls a starting runner's /healthz (a local call: cheap) until it answers, then
// reads its state with its token: that proves it is our runner, and for a recovered one
// tells whom it serves.
func (p *Pool) probe(ctx context.Context, r *runner) {
	deadline := r.registered.Add(p.cfg.StartTimeout)
	delay := 20 * time.Millisecond
	api := runnerapi.Runner{Address: r.address, Token: r.token}
	for {
		if p.gone(r) {
			return
		}
		hctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := p.runners.Health(hctx, r.address)
		var st runnerapi.State
		if err == nil {
			st, err = p.runners.State(hctx, api)
		}
		cancel()
		if err == nil {
			p.becameReady(r, st)
			return
		}
		if ctx.Err() != nil {
			return
		}
		if p.now().After(deadline) {
			p.End(r.jobID, fmt.Sprintf("not ready within %s: %v", p.cfg.StartTimeout, err))
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, 250*time.Millisecond)
	}
}

func (p *Pool) gone(r *runner) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.byJob[r.jobID] != r
}

func (p *Pool) becameReady(r *runner, st runnerapi.State) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r.probing = false
	if p.byJob[r.jobID] != r || r.state != starting {
		return
	}
	p.recoveredLocked(r)
	switch {
	case st.Tenant == "" && len(st.Functions) == 0:
		r.state = idle
		p.failDelay = 0
		if !r.recovered {
			// Only a runner the pool started proves that starts work again.
			p.failedStarts = 0
			p.m.ready.Observe(p.now().Sub(r.registered).Seconds())
			p.log.Info("runner ready", "job", r.jobID, "address", r.address, "took", p.now().Sub(r.registered))
		}
	case st.Tenant == "":
		// Code without a tenant: nothing the handler did. Never trust it.
		p.endLocked(r, "holds functions without a tenant")
		return
	case p.byTenant[st.Tenant] != nil:
		p.endLocked(r, "a second runner of tenant "+st.Tenant)
		return
	default:
		r.state, r.tenant = assigned, st.Tenant
		for fn, v := range st.Functions {
			r.functions[fn] = v
		}
		p.byTenant[st.Tenant] = r
		p.log.Info("runner recovered", "job", r.jobID, "tenant", st.Tenant, "functions", len(st.Functions))
	}
	p.notifyLocked()
	p.kickLocked()
}

// endLocked forgets the runner at once (no new route points at it) and stops its job in
// the background.
func (p *Pool) endLocked(r *runner, reason string) {
	if p.byJob[r.jobID] != r {
		return
	}
	delete(p.byJob, r.jobID)
	p.recoveredLocked(r)
	if r.tenant != "" && p.byTenant[r.tenant] == r {
		delete(p.byTenant, r.tenant)
	}
	p.m.ends.WithLabelValues(endReason(reason)).Inc()
	if r.state == starting && !r.recovered {
		// A runner that dies before it answers points at the template or the node:
		// back off rather than register replacements in a tight loop.
		p.failDelay = min(max(p.failDelay*2, 500*time.Millisecond), 30*time.Second)
		p.failUntil = p.now().Add(p.failDelay)
		p.startFailedLocked(reason)
		p.log.Error("runner failed before it was ready", "job", r.jobID, "reason", reason, "retry_in", p.failDelay,
			"failed_in_a_row", p.failedStarts)
	} else {
		p.log.Info("runner ended", "job", r.jobID, "tenant", r.tenant, "state", r.state.String(), "reason", reason)
	}
	p.stopLater(r.jobID, reason)
	p.notifyLocked()
	p.kickLocked()
}

func (p *Pool) stopLater(jobID, reason string) {
	ctx := p.ctx
	if ctx == nil || ctx.Err() != nil {
		// Shutting down or not started: stop with a short context of our own, so a
		// tenant's runner that must end (deleted tenant) is not kept by a restart.
		ctx = context.Background()
	}
	tracked := !p.stopping
	if tracked {
		p.wg.Add(1)
	}
	go func() {
		if tracked {
			defer p.wg.Done()
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		if err := p.jobs.Deregister(sctx, jobID); err != nil {
			p.log.Error("stop runner job", "job", jobID, "reason", reason, "err", err)
		}
	}()
}

// checkStarting re-reads the allocation of runners still without an address (an event
// may have been missed) and ends the ones past StartTimeout.
func (p *Pool) checkStarting(ctx context.Context) {
	p.mu.Lock()
	var ids []string
	now := p.now()
	for _, r := range p.byJob {
		if r.state != starting || r.address != "" {
			continue
		}
		if now.Sub(r.registered) > p.cfg.StartTimeout {
			p.endLocked(r, fmt.Sprintf("not placed within %s", p.cfg.StartTimeout))
			continue
		}
		if now.Sub(r.registered) > 2*time.Second {
			ids = append(ids, r.jobID)
		}
	}
	p.mu.Unlock()
	for _, id := range ids {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		a, err := p.jobs.Alloc(actx, id)
		cancel()
		if err == nil && a != nil {
			p.Observe(id, *a)
		}
	}
}

// checkHealth asks every ready runner for /healthz; HealthFailures failures in a row, or
// a runner whose state is not the one the pool gave it, end it.
func (p *Pool) checkHealth(ctx context.Context) {
	p.mu.Lock()
	type target struct {
		r     *runner
		state state
	}
	var ts []target
	for _, r := range p.byJob {
		if r.state != starting {
			ts = append(ts, target{r, r.state})
		}
	}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, t := range ts {
		wg.Go(func() {
			hctx, cancel := context.WithTimeout(ctx, time.Second)
			h, err := p.runners.Health(hctx, t.r.address)
			cancel()
			if ctx.Err() != nil {
				return
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.byJob[t.r.jobID] != t.r {
				return
			}
			if err != nil {
				t.r.healthFails++
				if t.r.healthFails >= p.cfg.HealthFailures {
					p.endLocked(t.r, fmt.Sprintf("unhealthy: %v", err))
				}
				return
			}
			t.r.healthFails = 0
			// An idle runner that says it is assigned was assigned by someone else.
			if t.state == idle && t.r.state == idle && h.State != runnerapi.StateIdle {
				p.endLocked(t.r, "idle runner reports "+h.State)
			}
		})
	}
	wg.Wait()
}

// reapIdle ends tenants' runners unused for IdleTimeout. When the runner reports its own
// idle time (runnerapi.State.IdleMs), that wins over the handler's last resolve: calls go
// from the gateway straight to the runner, so the handler does not see them.
func (p *Pool) reapIdle(ctx context.Context) {
	p.mu.Lock()
	now := p.now()
	var cands []*runner
	for _, r := range p.byTenant {
		if now.Sub(r.lastUsed) >= p.cfg.IdleTimeout {
			cands = append(cands, r)
		}
	}
	p.mu.Unlock()
	for _, r := range cands {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := p.runners.State(sctx, runnerapi.Runner{Address: r.address, Token: r.token})
		cancel()
		p.mu.Lock()
		if p.byJob[r.jobID] == r && p.now().Sub(r.lastUsed) >= p.cfg.IdleTimeout {
			switch {
			case err == nil && st.Inflight != nil && *st.Inflight > 0:
				r.lastUsed = p.now()
			case err == nil && st.IdleMs != nil && time.Duration(*st.IdleMs)*time.Millisecond < p.cfg.IdleTimeout:
				r.lastUsed = p.now().Add(-time.Duration(*st.IdleMs) * time.Millisecond)
			default:
				p.endLocked(r, "idle")
			}
		}
		p.mu.Unlock()
	}
}

// endReason maps an end reason to a bounded metric label.
func endReason(reason string) string {
	for _, k := range []string{"idle", "unhealthy", "allocation", "tenant", "assign", "load", "not ready", "not placed", "function"} {
		if len(reason) >= len(k) && reason[:len(k)] == k {
			return k
		}
	}
	return "other"
}

type metrics struct {
	starts     *prometheus.CounterVec
	ends       *prometheus.CounterVec
	ready      prometheus.Histogram
	assigns    prometheus.Counter
	noCapacity prometheus.Counter
}

func newMetrics(p *Pool, reg prometheus.Registerer) *metrics {
	m := &metrics{
		starts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fnhook_handler_runner_starts_total", Help: "Runner jobs registered, by outcome.",
		}, []string{"outcome"}),
		ends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fnhook_handler_runner_ends_total", Help: "Runners ended, by reason.",
		}, []string{"reason"}),
		ready: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "fnhook_handler_runner_ready_seconds", Help: "Time from registering a runner job to the runner answering.",
			Buckets: []float64{.25, .5, 1, 1.5, 2, 3, 5, 8, 13, 20, 30, 60},
		}),
		assigns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fnhook_handler_runner_assigns_total", Help: "Idle runners assigned to a tenant.",
		}),
		noCapacity: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fnhook_handler_no_capacity_total", Help: "Acquires that found no runner in time.",
		}),
	}
	if reg == nil {
		return m
	}
	gauge := func(name, help string, pick func(s, i, a int) int) prometheus.GaugeFunc {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
			s, i, a := p.Counts()
			return float64(pick(s, i, a))
		})
	}
	locked := func(name, help string, value func() float64) prometheus.GaugeFunc {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
			p.mu.Lock()
			defer p.mu.Unlock()
			return value()
		})
	}
	reg.MustRegister(m.starts, m.ends, m.ready, m.assigns, m.noCapacity,
		gauge("fnhook_handler_pool_idle", "Idle, unassigned runners ready to take a tenant.", func(_, i, _ int) int { return i }),
		gauge("fnhook_handler_pool_assigned", "Runners assigned to a tenant.", func(_, _, a int) int { return a }),
		gauge("fnhook_handler_pool_starting", "Runners registered and not ready yet.", func(s, _, _ int) int { return s }),
		locked("fnhook_handler_pool_degraded", "1 when the last runner starts all failed and no runner is idle (/healthz says why), else 0.",
			func() float64 {
				if p.degradedLocked() != "" {
					return 1
				}
				return 0
			}),
		locked("fnhook_handler_pool_failed_starts", "Runner starts that failed in a row since a new runner last answered.",
			func() float64 { return float64(p.failedStarts) }),
		locked("fnhook_handler_pool_last_start_failure_timestamp_seconds", "Unix time of the last failed runner start (0: none).",
			func() float64 {
				if p.lastFailureAt.IsZero() {
					return 0
				}
				return float64(p.lastFailureAt.UnixNano()) / 1e9
			}),
	)
	return m
}
