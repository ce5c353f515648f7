// Package resolver answers where a tenant's function runs: it reads the function's
// manifest, makes sure its modules are in the node's cache, gives the tenant a runner
// from the warm pool if it has none, loads the current version there, and answers the
// route. It also applies function and tenant events to the runners of this node.
package resolver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	fnhook "github.com/fnhook/fnhook/libs"
	"github.com/fnhook/fnhook/libs/handlerapi"
	"github.com/fnhook/fnhook/libs/queue"
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

// Pool hands out runners (pool.Pool).
type Pool interface {
	Loaded(tenant, fn string) (pool.Runner, int, bool)
	Peek(tenant, fn string) (pool.Runner, int, bool)
	Lookup(tenant string) (pool.Runner, bool)
	Acquire(ctx context.Context, tenant string) (pool.Runner, bool, error)
	SetLoaded(jobID, fn string, version int)
	SyncLoaded(jobID string, functions map[string]int)
	End(jobID, reason string)
	EndTenant(tenant, reason string) bool
}

// Runners loads code into runners (runnerapi.Client).
type Runners interface {
	Load(ctx context.Context, r runnerapi.Runner, name string, f runnerapi.Function) (runnerapi.Loaded, error)
	Unload(ctx context.Context, r runnerapi.Runner, name string) error
	State(ctx context.Context, r runnerapi.Runner) (runnerapi.State, error)
}

// maxAttempts bounds how many runners one resolve tries when runners die under it.
const maxAttempts = 3

// Resolver is safe for concurrent use. Work on one tenant (assigning, loading, events)
// is serialised; different tenants proceed in parallel.
type Resolver struct {
	store   Store
	modules Modules
	pool    Pool
	runners Runners
	log     *slog.Logger
	locks   tenantLocks

	resolves *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// New returns a Resolver; reg receives its metrics (may be nil).
func New(store Store, modules Modules, p Pool, runners Runners, log *slog.Logger, reg prometheus.Registerer) *Resolver {
	r := &Resolver{
		store: store, modules: modules, pool: p, runners: runners, log: log,
		locks: tenantLocks{m: map[string]*tenantLock{}},
		resolves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fnhook_handler_resolves_total", Help: "Resolves answered, by outcome (warm, cold, or the error code).",
		}, []string{"outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fnhook_handler_resolve_seconds", Help: "Resolve latency, cold (assign or load needed) or warm.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20},
		}, []string{"kind"}),
	}
	if reg != nil {
		reg.MustRegister(r.resolves, r.latency)
	}
	return r
}

// Resolve returns the route of tenant's function, assigning a runner and loading the
// current version as needed. refresh says the last route did not work: the runner is
// asked for its state rather than trusted.
func (r *Resolver) Resolve(ctx context.Context, tenant, name string, refresh bool) (fnhook.Route, error) {
	start := time.Now()
	route, err := r.resolve(ctx, tenant, name, refresh)
	switch {
	case err != nil:
		r.resolves.WithLabelValues(outcome(err)).Inc()
	case route.Cold:
		r.resolves.WithLabelValues("cold").Inc()
		r.latency.WithLabelValues("cold").Observe(time.Since(start).Seconds())
	default:
		r.resolves.WithLabelValues("warm").Inc()
		r.latency.WithLabelValues("warm").Observe(time.Since(start).Seconds())
	}
	return route, err
}

func (r *Resolver) resolve(ctx context.Context, tenant, name string, refresh bool) (fnhook.Route, error) {
	f, err := r.store.GetFunction(ctx, tenant, name)
	if err != nil {
		return fnhook.Route{}, err
	}
	if err := usable(f); err != nil {
		return fnhook.Route{}, err
	}
	// Warm: the tenant's runner has this version (or a newer one, loaded by an event).
	if run, v, ok := r.pool.Loaded(tenant, name); ok && v >= f.Version && !refresh {
		return route(run, v, false), nil
	}
	start := time.Now()
	if err := r.modules.Ensure(ctx, f.ResolvedDependencies); err != nil {
		return fnhook.Route{}, moduleError(err)
	}
	modules := time.Since(start)
	unlock, waited, err := r.locks.lock(ctx, tenant)
	if err != nil {
		return fnhook.Route{}, err
	}
	defer unlock()
	if refresh {
		r.refresh(ctx, tenant)
	}
	for attempt := 1; ; attempt++ {
		t0 := time.Now()
		run, assigned, err := r.pool.Acquire(ctx, tenant)
		if err != nil {
			return fnhook.Route{}, err
		}
		acquire := time.Since(t0)
		cold := assigned || waited
		if _, v, _ := r.pool.Loaded(tenant, name); v >= f.Version {
			return route(run, v, cold), nil
		}
		t0 = time.Now()
		v, err := r.load(ctx, run, f)
		if err == nil {
			r.log.Debug("cold resolve", "tenant", tenant, "function", name, "version", v, "job", run.JobID,
				"assigned", assigned, "modules", modules, "acquire", acquire, "load", time.Since(t0))
			return route(run, v, true), nil
		}
		if !runnerFault(err) || attempt >= maxAttempts || ctx.Err() != nil {
			return fnhook.Route{}, loadError(tenant, name, err)
		}
		r.pool.End(run.JobID, fmt.Sprintf("load failed: %v", err))
	}
}

// refresh replaces what the pool recorded about the tenant's runner with what the runner
// says, and ends a runner that does not answer or serves someone else.
func (r *Resolver) refresh(ctx context.Context, tenant string) {
	run, ok := r.pool.Lookup(tenant)
	if !ok {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	st, err := r.runners.State(sctx, run.API())
	cancel()
	switch {
	case err != nil && ctx.Err() == nil:
		r.pool.End(run.JobID, fmt.Sprintf("unhealthy: state on refresh: %v", err))
	case err == nil && st.Tenant != tenant:
		r.pool.End(run.JobID, fmt.Sprintf("unhealthy: serves %q, not %q", st.Tenant, tenant))
	case err == nil:
		r.pool.SyncLoaded(run.JobID, st.Functions)
	}
}

// load puts f into the runner and records the version the runner answers (never lower
// than the one it had).
func (r *Resolver) load(ctx context.Context, run pool.Runner, f fnhook.Function) (int, error) {
	l, err := r.runners.Load(ctx, run.API(), f.Name, runnerapi.Function{
		Version: f.Version, Code: f.Code, Dependencies: f.ResolvedDependencies,
		Configuration: f.Configuration, TimeoutMs: f.TimeoutMs,
	})
	if err != nil {
		return 0, err
	}
	r.pool.SetLoaded(run.JobID, f.Name, l.Version)
	return l.Version, nil
}

func route(run pool.Runner, version int, cold bool) fnhook.Route {
	return fnhook.Route{Address: run.Address, Token: run.Token, Version: version, Cold: cold}
}

// usable answers the manifest's build state as the resolve API's errors.
func usable(f fnhook.Function) error {
	switch f.Status {
	case fnhook.StatusReady:
		return nil
	case fnhook.StatusBuilding:
		msg := fmt.Sprintf("function %q version %d is being built", f.Name, f.Version)
		if len(f.Pending) > 0 {
			msg += " (waiting for " + strings.Join(f.Pending, ", ") + ")"
		}
		return &fnhook.Error{Code: handlerapi.CodeFunctionBuilding, Status: http.StatusServiceUnavailable, Message: msg}
	case fnhook.StatusFailed:
		msg := f.Error
		if msg == "" {
			msg = "the function failed to build"
		}
		return &fnhook.Error{Code: handlerapi.CodeFunctionFailed, Status: http.StatusFailedDependency, Message: msg}
	default:
		return fmt.Errorf("function %s/%s has unknown status %q", f.Tenant, f.Name, f.Status)
	}
}

// runnerFault tells a broken or lost runner (try another one) from a function the runner
// refused (no other runner would take it either).
func runnerFault(err error) bool {
	var fe *fnhook.Error
	if !errors.As(err, &fe) {
		return true // no answer at all
	}
	switch fe.Code {
	case runnerapi.CodeCompileError, "invalid_function", "invalid_dependency", "too_many_functions", "too_large":
		return false
	}
	return true
}

// loadError turns a load refused by the runner into the resolve API's answer.
func loadError(tenant, name string, err error) error {
	var fe *fnhook.Error
	if errors.As(err, &fe) {
		switch fe.Code {
		case runnerapi.CodeCompileError, "invalid_function", "invalid_dependency":
			return &fnhook.Error{Code: handlerapi.CodeFunctionFailed, Status: http.StatusFailedDependency, Message: fe.Message, Err: err}
		case "too_many_functions":
			return &fnhook.Error{Code: fnhook.EQUOTA, Message: fe.Message, Err: err}
		case "too_large":
			return &fnhook.Error{Code: fnhook.ETOOLARGE, Message: "the function's code is too large for a runner", Err: err}
		}
	}
	return &fnhook.Error{Code: fnhook.EUNAVAILABLE, Message: "the function could not be loaded on a runner; retry shortly",
		Err: fmt.Errorf("load %s/%s: %w", tenant, name, err)}
}

// moduleError keeps the cache's own answers (failed or missing module) and turns faults
// (download, digest) into a retryable 503 whose cause is logged, not shown.
func moduleError(err error) error {
	var fe *fnhook.Error
	if errors.As(err, &fe) {
		return err
	}
	return &fnhook.Error{Code: "module_unavailable", Status: http.StatusServiceUnavailable,
		Message: "a module of this function could not be installed on the node; retry shortly", Err: err}
}

func outcome(err error) string {
	switch code := fnhook.ErrorCode(err); code {
	case fnhook.ENOTFOUND, handlerapi.CodeFunctionBuilding, handlerapi.CodeFunctionFailed, handlerapi.CodeNoCapacity,
		fnhook.EUNAVAILABLE, fnhook.EQUOTA, fnhook.ETOOLARGE, "module_unavailable":
		return code
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return "canceled"
	}
	return "error"
}

// FunctionChanged applies a function event to the tenant's runner on this node, if any:
// a new version is loaded at once, so the next call is warm and already sees it; a
// deleted function is unloaded.
func (r *Resolver) FunctionChanged(ctx context.Context, ev fnhook.FunctionChanged) error {
	if _, _, ok := r.pool.Peek(ev.Tenant, ev.Function); !ok {
		return nil
	}
	unlock, _, err := r.locks.lock(ctx, ev.Tenant)
	if err != nil {
		return err
	}
	defer unlock()
	run, loaded, ok := r.pool.Peek(ev.Tenant, ev.Function)
	if !ok {
		return nil
	}
	if !ev.Deleted && loaded >= ev.Version {
		return nil
	}
	var f fnhook.Function
	if !ev.Deleted {
		f, err = r.store.GetFunction(ctx, ev.Tenant, ev.Function)
		if fnhook.ErrorCode(err) == fnhook.ENOTFOUND {
			ev.Deleted = true
		} else if err != nil {
			return err
		}
	}
	if ev.Deleted {
		if loaded == 0 {
			return nil
		}
		err := r.runners.Unload(ctx, run.API(), ev.Function)
		if err != nil && !runnerapi.IsCode(err, runnerapi.CodeFunctionNotLoaded) {
			r.pool.End(run.JobID, fmt.Sprintf("unload failed: %v", err))
			return nil
		}
		r.pool.SetLoaded(run.JobID, ev.Function, 0)
		r.log.Info("function unloaded", "tenant", ev.Tenant, "function", ev.Function, "job", run.JobID)
		return nil
	}
	if f.Status != fnhook.StatusReady || f.Version <= loaded {
		return nil // the resolve after its build loads it
	}
	if err := r.modules.Ensure(ctx, f.ResolvedDependencies); err != nil {
		r.log.Warn("modules of a changed function", "tenant", ev.Tenant, "function", ev.Function, "err", err)
		return nil
	}
	v, err := r.load(ctx, run, f)
	if err != nil {
		if runnerFault(err) {
			r.pool.End(run.JobID, fmt.Sprintf("load failed: %v", err))
		}
		r.log.Warn("load a changed function", "tenant", ev.Tenant, "function", ev.Function, "err", err)
		return nil
	}
	r.log.Info("function reloaded", "tenant", ev.Tenant, "function", ev.Function, "version", v, "job", run.JobID)
	return nil
}

// TenantDeleted ends the tenant's runner on this node, if any.
func (r *Resolver) TenantDeleted(ctx context.Context, ev fnhook.TenantDeleted) error {
	unlock, _, err := r.locks.lock(ctx, ev.Tenant)
	if err != nil {
		return err
	}
	defer unlock()
	r.pool.EndTenant(ev.Tenant, "tenant deleted")
	return nil
}

// Consume applies function.changed and tenant.deleted events from an exclusive queue of
// this handler until ctx ends.
func (r *Resolver) Consume(ctx context.Context, q *queue.Conn) error {
	spec := queue.QueueSpec{Bindings: []string{fnhook.EventFunctionChanged, fnhook.EventTenantDeleted}, Prefetch: 16}
	return q.Consume(ctx, spec, func(ctx context.Context, d queue.Delivery) error {
		ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		switch d.RoutingKey {
		case fnhook.EventFunctionChanged:
			var ev fnhook.FunctionChanged
			if err := json.Unmarshal(d.Body, &ev); err != nil || ev.Tenant == "" || ev.Function == "" {
				return fmt.Errorf("%w: bad %s event: %v", queue.ErrReject, d.RoutingKey, err)
			}
			return r.FunctionChanged(ctx, ev)
		case fnhook.EventTenantDeleted:
			var ev fnhook.TenantDeleted
			if err := json.Unmarshal(d.Body, &ev); err != nil || ev.Tenant == "" {
				return fmt.Errorf("%w: bad %s event: %v", queue.ErrReject, d.RoutingKey, err)
			}
			return r.TenantDeleted(ctx, ev)
		}
		return nil
	})
}

// tenantLocks serialises work per tenant. Entries live only while someone holds or waits
// for them, so the map is bounded by the requests in flight.
type tenantLocks struct {
	mu sync.Mutex
	m  map[string]*tenantLock
}

type tenantLock struct {
	ch   chan struct{} // holds one token while locked
	refs int
}

// lock takes the tenant's lock, waiting until ctx ends; waited tells whether it had to
// wait (someone else was assigning or loading for the tenant).
func (l *tenantLocks) lock(ctx context.Context, tenant string) (unlock func(), waited bool, err error) {
	l.mu.Lock()
	tl := l.m[tenant]
	if tl == nil {
		tl = &tenantLock{ch: make(chan struct{}, 1)}
		l.m[tenant] = tl
	}
	tl.refs++
	l.mu.Unlock()
	release := func() {
		l.mu.Lock()
		tl.refs--
		if tl.refs == 0 {
			delete(l.m, tenant)
		}
		l.mu.Unlock()
	}
	select {
	case tl.ch <- struct{}{}:
	default:
		waited = true
		select {
		case tl.ch <- struct{}{}:
		case <-ctx.Done():
			release()
			return nil, true, ctx.Err()
		}
	}
	return func() { <-tl.ch; release() }, waited, nil
}
