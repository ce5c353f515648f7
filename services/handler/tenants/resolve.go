package tenants

import (
	"context"
	"fmt"
	"time"

	fnhook "github.com/fnhook/fnhook/libs"
	"github.com/fnhook/fnhook/libs/runnerapi"
	"github.com/fnhook/fnhook/services/handler/pool"
)

// maxAttempts bounds how many runners one resolve tries when runners break under it.
const maxAttempts = 3

// What a resolve tells of the calls on its runner. The gateway calls the runner right
// after the resolve: for callSlack (the gateway's dial and its one replay) the call may
// be on its way, and no runner report can show it yet. Once there, it lasts at most the
// function's timeout (defaultTimeout when the manifest has none): runners that report
// their calls in flight (runnerapi.State.Inflight) say whether it still runs; for others,
// the resolve's time plus the timeout plus callSlack is the window in which it may.
const (
	defaultTimeout = 30 * time.Second
	callSlack      = 2 * time.Second
)

// Resolve returns the route of tenant's function, assigning a runner and loading the
// current version as needed. refresh says the last route did not work: the runner is
// asked for its state rather than trusted.
func (t *Table) Resolve(ctx context.Context, tenant, name string, refresh bool) (fnhook.Route, error) {
	start := time.Now()
	route, err := t.resolve(ctx, tenant, name, refresh)
	switch {
	case err != nil:
		t.m.resolves.WithLabelValues(outcome(err)).Inc()
	case route.Cold:
		t.m.resolves.WithLabelValues("cold").Inc()
		t.m.latency.WithLabelValues("cold").Observe(time.Since(start).Seconds())
	default:
		t.m.resolves.WithLabelValues("warm").Inc()
		t.m.latency.WithLabelValues("warm").Observe(time.Since(start).Seconds())
	}
	return route, err
}

func (t *Table) resolve(ctx context.Context, tenant, name string, refresh bool) (fnhook.Route, error) {
	f, err := t.store.GetFunction(ctx, tenant, name)
	if err != nil {
		return fnhook.Route{}, err
	}
	if err := usable(f); err != nil {
		return fnhook.Route{}, err
	}
	// Warm: the tenant's runner has this version (or a newer one, loaded by an event).
	if !refresh {
		if route, ok := t.warm(tenant, f); ok {
			return route, nil
		}
	}
	start := time.Now()
	if err := t.modules.Ensure(ctx, f.ResolvedDependencies); err != nil {
		return fnhook.Route{}, moduleError(err)
	}
	modules := time.Since(start)
	tn, waited, err := t.lock(ctx, tenant)
	if err != nil {
		return fnhook.Route{}, err
	}
	defer t.unlock(tn)
	if refresh {
		t.refresh(ctx, tn)
	}
	for attempt := 1; ; attempt++ {
		t0 := time.Now()
		run, assigned, err := t.runnerFor(ctx, tn)
		if err != nil {
			return fnhook.Route{}, err
		}
		acquire := time.Since(t0)
		if v := t.loaded(run, name); v >= f.Version {
			return t.routed(run, f, v, assigned || waited), nil
		}
		t0 = time.Now()
		v, err := t.load(ctx, run, f)
		if err == nil {
			t.log.Debug("cold resolve", "tenant", tenant, "function", name, "version", v, "job", run.JobID,
				"assigned", assigned, "modules", modules, "acquire", acquire, "load", time.Since(t0))
			return t.routed(run, f, v, true), nil
		}
		if !runnerFault(err) || attempt >= maxAttempts || ctx.Err() != nil {
			return fnhook.Route{}, loadError(tenant, name, err)
		}
		t.drop(run, pool.EndLoadFailed, fmt.Sprintf("load %s v%d: %v", name, f.Version, err))
	}
}

// warm answers the route when the tenant's runner has f's version or a newer one.
func (t *Table) warm(tenant string, f fnhook.Function) (fnhook.Route, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tn := t.tenants[tenant]
	if tn == nil || tn.run == nil {
		return fnhook.Route{}, false
	}
	v := tn.run.functions[f.Name]
	if v < f.Version {
		return fnhook.Route{}, false
	}
	t.usedLocked(tn.run, f)
	return route(tn.run, v, false), true
}

// routed records the resolve on run and answers its route.
func (t *Table) routed(run *runner, f fnhook.Function, version int, cold bool) fnhook.Route {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.usedLocked(run, f)
	return route(run, version, cold)
}

// usedLocked records that a call of f is about to reach run (see callSlack). Later calls
// through the gateway's cached route are not seen here; the runner reports those
// (runnerapi.State) when asked before an eviction.
func (t *Table) usedLocked(run *runner, f fnhook.Function) {
	now := t.now()
	run.lastResolve = now
	if now.After(run.lastUsed) {
		run.lastUsed = now
	}
	timeout := defaultTimeout
	if f.TimeoutMs > 0 {
		timeout = time.Duration(f.TimeoutMs) * time.Millisecond
	}
	if until := now.Add(timeout + callSlack); until.After(run.busyUntil) {
		run.busyUntil = until
	}
}

func route(run *runner, version int, cold bool) fnhook.Route {
	return fnhook.Route{Address: run.Address, Token: run.Token, Version: version, Cold: cold}
}

// load puts f into the runner and records the version the runner answers (never lower
// than the one it had).
func (t *Table) load(ctx context.Context, run *runner, f fnhook.Function) (int, error) {
	l, err := t.runners.Load(ctx, run.API(), f.Name, runnerapi.Function{
		Version: f.Version, Code: f.Code, Dependencies: f.ResolvedDependencies,
		Configuration: f.Configuration, TimeoutMs: f.TimeoutMs,
	})
	if err != nil {
		return 0, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if l.Version > run.functions[f.Name] {
		run.functions[f.Name] = l.Version
	}
	return l.Version, nil
}

// refresh replaces what the table recorded about the tenant's runner with what the runner
// says, and ends a runner that does not answer or serves someone else.
func (t *Table) refresh(ctx context.Context, tn *tenant) {
	run := t.current(tn)
	if run == nil {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	st, err := t.runners.State(sctx, run.API())
	cancel()
	switch {
	case err != nil && ctx.Err() == nil:
		t.drop(run, pool.EndUnhealthy, fmt.Sprintf("state on refresh: %v", err))
	case err == nil && st.Tenant != run.tenant:
		t.drop(run, pool.EndForeign, fmt.Sprintf("serves %q, not %q", st.Tenant, run.tenant))
	case err == nil:
		t.mu.Lock()
		run.functions = make(map[string]int, len(st.Functions))
		for fn, v := range st.Functions {
			run.functions[fn] = v
		}
		t.mu.Unlock()
	}
}
