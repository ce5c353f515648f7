// Package builds tracks the npm modules a function waits for: it decides a saved function's
// build state from the module records, asks the builder for missing modules, and turns
// waiting functions ready or failed when module events arrive (or, if an event is lost,
// when the periodic convergence finds the module's record).
package builds

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	fnhook "github.com/fnhook/fnhook/libs"
	"github.com/fnhook/fnhook/libs/queue"
	"github.com/fnhook/fnhook/libs/store"
)

// Tracker is the link between functions and module builds. It is safe for concurrent use.
type Tracker struct {
	store    *store.Store
	queue    *queue.Conn
	log      *slog.Logger
	interval time.Duration
	now      func() time.Time

	buildsRequested prometheus.Counter
	settled         *prometheus.CounterVec
	publishFailures prometheus.Counter
}

// Options configure a Tracker.
type Options struct {
	Store *store.Store
	Queue *queue.Conn
	Log   *slog.Logger
	// Interval is how often building functions are re-checked (30 s).
	Interval time.Duration
	// Metrics receives the tracker's counters (nil: not exported).
	Metrics prometheus.Registerer
}

// New returns a Tracker.
func New(o Options) *Tracker {
	if o.Interval <= 0 {
		o.Interval = 30 * time.Second
	}
	t := &Tracker{
		store: o.Store, queue: o.Queue, log: o.Log, interval: o.Interval, now: func() time.Time { return time.Now().UTC() },
		buildsRequested: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fnhook_mgmt_builds_requested_total", Help: "Module build requests published to the build queue.",
		}),
		settled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fnhook_mgmt_functions_settled_total", Help: "Waiting functions that turned ready or failed, by status.",
		}, []string{"status"}),
		publishFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fnhook_mgmt_publish_failures_total", Help: "Events or build requests that could not be published.",
		}),
	}
	if o.Metrics != nil {
		o.Metrics.MustRegister(t.buildsRequested, t.settled, t.publishFailures)
	}
	return t
}

// Plan is the build state a function gets from its resolved dependencies.
type Plan struct {
	Status  string
	Pending []string // "name@version" not built yet, sorted
	Error   string   // why the function failed
}

// Plan reads the module records of resolved (name -> exact version): all ready gives
// ready; a failed one gives failed with the module's error; otherwise building, pending
// the modules not ready yet.
func (t *Tracker) Plan(ctx context.Context, resolved map[string]string) (Plan, error) {
	names := make([]string, 0, len(resolved))
	for n := range resolved {
		names = append(names, n)
	}
	sort.Strings(names)
	p := Plan{Status: fnhook.StatusReady}
	for _, n := range names {
		m, found, err := t.store.GetModule(ctx, n, resolved[n])
		if err != nil {
			return Plan{}, fmt.Errorf("module record %s: %w", fnhook.ModuleKey(n, resolved[n]), err)
		}
		switch {
		case found && m.Status == fnhook.ModuleReady:
		case found && m.Status == fnhook.ModuleFailed:
			return Plan{Status: fnhook.StatusFailed, Error: moduleError(fnhook.ModuleKey(n, resolved[n]), m.Error)}, nil
		default:
			p.Pending = append(p.Pending, fnhook.ModuleKey(n, resolved[n]))
		}
	}
	if len(p.Pending) > 0 {
		p.Status = fnhook.StatusBuilding
	}
	return p, nil
}

func moduleError(key, why string) string {
	if why == "" {
		why = "no reason recorded"
	}
	return "dependency " + key + " failed to build: " + why
}

// splitKey parses "name@version" (the name may be scoped: "@scope/name@1.2.3").
func splitKey(key string) (name, version string, ok bool) {
	i := strings.LastIndex(key, "@")
	if i <= 0 {
		return "", "", false
	}
	return key[:i], key[i+1:], true
}

// Track is called once a building function f is stored: it records f as waiting on each
// pending module, asks the builder for them, and re-checks the module records so a module
// that finished while f was being saved is not missed. It returns f as it is now.
func (t *Tracker) Track(ctx context.Context, f fnhook.Function) (fnhook.Function, error) {
	if f.Status != fnhook.StatusBuilding {
		return f, nil
	}
	w := store.Waiter{Tenant: f.Tenant, Function: f.Name, Version: f.Version}
	for _, key := range f.Pending {
		n, v, _ := splitKey(key)
		if err := t.store.AddWaiter(ctx, n, v, w); err != nil {
			return f, err
		}
	}
	for _, key := range f.Pending {
		n, v, _ := splitKey(key)
		if err := t.requestBuild(ctx, n, v); err != nil {
			// The convergence loop publishes it again for a module that has no record.
			t.log.Warn("build request not published; convergence will retry", "module", key, "err", err)
		}
	}
	return t.settle(ctx, f.Tenant, f.Name, f.Version, false)
}

func (t *Tracker) requestBuild(ctx context.Context, name, version string) error {
	if err := t.queue.PublishBuild(ctx, fnhook.BuildRequest{Name: name, Version: version}); err != nil {
		t.publishFailures.Inc()
		return err
	}
	t.buildsRequested.Inc()
	return nil
}

// settleAttempts bounds retries of a conditional update that lost a race.
const settleAttempts = 8

// settle re-reads the module records of the function's pending modules and stores the
// outcome (conditionally, retrying lost races). republish asks again for modules that
// have no record at all or whose build claim expired. It returns the function as stored.
func (t *Tracker) settle(ctx context.Context, tenant, name string, version int, republish bool) (fnhook.Function, error) {
	var f fnhook.Function
	for range settleAttempts {
		var err error
		f, err = t.store.GetFunction(ctx, tenant, name)
		if err != nil {
			return f, err
		}
		if f.Version != version || f.Status != fnhook.StatusBuilding {
			return f, nil
		}
		next := f
		next.Pending = nil
		var done []string
		for _, key := range f.Pending {
			n, v, ok := splitKey(key)
			if !ok {
				continue
			}
			m, found, err := t.store.GetModule(ctx, n, v)
			if err != nil {
				return f, err
			}
			switch {
			case found && m.Status == fnhook.ModuleReady:
				done = append(done, key)
			case found && m.Status == fnhook.ModuleFailed:
				done = append(done, key)
				if next.Status != fnhook.StatusFailed {
					next.Status, next.Error = fnhook.StatusFailed, moduleError(key, m.Error)
				}
			default:
				next.Pending = append(next.Pending, key)
				expired := found && m.ClaimUntil < t.now().UnixMilli()
				if republish && (!found || expired) {
					if err := t.requestBuild(ctx, n, v); err != nil {
						t.log.Warn("build request not published", "module", key, "err", err)
					}
				}
			}
		}
		if len(done) == 0 {
			return f, nil
		}
		stored, err := t.finish(ctx, f, next, done)
		if fnhook.ErrorCode(err) == fnhook.CodeConflict {
			continue
		}
		return stored, err
	}
	return f, nil
}

// finish stores next (the build state that follows from the modules in done) if f is
// still what is stored, forgets f's waits on done, and tells the handlers when f settled.
func (t *Tracker) finish(ctx context.Context, f, next fnhook.Function, done []string) (fnhook.Function, error) {
	if next.Status == fnhook.StatusFailed {
		next.Pending = nil
	} else if len(next.Pending) == 0 {
		next.Status = fnhook.StatusReady
	}
	next.UpdatedAt = t.now()
	if err := t.store.ReplaceFunctionIf(ctx, next, f.Version, f.UpdatedAt); err != nil {
		return f, err
	}
	for _, key := range done {
		n, v, _ := splitKey(key)
		if err := t.store.RemoveWaiter(ctx, n, v, f.Tenant, f.Name); err != nil {
			t.log.Warn("remove waiter", "module", key, "function", f.Tenant+"/"+f.Name, "err", err)
		}
	}
	if next.Status != fnhook.StatusBuilding {
		t.settled.WithLabelValues(next.Status).Inc()
		t.log.Info("function settled", "tenant", f.Tenant, "function", f.Name, "version", f.Version, "status", next.Status)
		t.FunctionChanged(ctx, fnhook.FunctionChanged{Tenant: f.Tenant, Function: f.Name, Version: f.Version})
	}
	return next, nil
}

// FunctionChanged publishes a function.changed event; a failure is logged and counted
// (the handlers' caches expire on their own), not returned.
func (t *Tracker) FunctionChanged(ctx context.Context, ev fnhook.FunctionChanged) {
	t.publish(ctx, fnhook.EventFunctionChanged, ev)
}

// TenantDeleted publishes a tenant.deleted event; a failure is logged and counted.
func (t *Tracker) TenantDeleted(ctx context.Context, tenant string) {
	t.publish(ctx, fnhook.EventTenantDeleted, fnhook.TenantDeleted{Tenant: tenant})
}

// publishTimeout bounds how long a request waits for the broker to confirm an event.
const publishTimeout = 5 * time.Second

func (t *Tracker) publish(ctx context.Context, key string, v any) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
	defer cancel()
	if err := t.queue.PublishEvent(ctx, key, v); err != nil {
		t.publishFailures.Inc()
		t.log.Error("event not published", "key", key, "err", err)
	}
}

// Forget drops the waits of a deleted function version.
func (t *Tracker) Forget(ctx context.Context, f fnhook.Function) {
	for _, key := range f.Pending {
		n, v, _ := splitKey(key)
		if err := t.store.RemoveWaiter(ctx, n, v, f.Tenant, f.Name); err != nil {
			t.log.Warn("remove waiter", "module", key, "function", f.Tenant+"/"+f.Name, "err", err)
		}
	}
}

// QueueName is the durable queue mgmt reads module events from.
func (t *Tracker) QueueName() string { return t.queue.Names().Exchange + ".mgmt" }

// Run consumes module events and re-checks building functions at start and every
// interval, until ctx ends.
func (t *Tracker) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() {
		errc <- t.queue.Consume(ctx, queue.QueueSpec{
			Name: t.QueueName(), Bindings: []string{fnhook.EventModuleReady, fnhook.EventModuleFailed},
			Durable: true, Prefetch: 4,
		}, t.handleEvent)
	}()
	tick := time.NewTicker(t.interval)
	defer tick.Stop()
	for {
		if err := t.Converge(ctx); err != nil && ctx.Err() == nil {
			t.log.Warn("convergence pass failed", "err", err)
		}
		select {
		case <-ctx.Done():
			<-errc
			return nil
		case err := <-errc:
			return fmt.Errorf("module events consumer: %w", err)
		case <-tick.C:
		}
	}
}

// Converge re-checks every building function against its modules' records, and asks
// again for modules nobody is building, so a lost event or a restart still converges.
func (t *Tracker) Converge(ctx context.Context) error {
	fns, err := t.store.BuildingFunctions(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, f := range fns {
		if _, err := t.settle(ctx, f.Tenant, f.Name, f.Version, true); err != nil && fnhook.ErrorCode(err) != fnhook.CodeNotFound {
			errs = append(errs, fmt.Errorf("%s/%s: %w", f.Tenant, f.Name, err))
		}
	}
	return errors.Join(errs...)
}

// handleEvent applies a module.ready or module.failed event to the functions waiting on it.
func (t *Tracker) handleEvent(ctx context.Context, d queue.Delivery) error {
	var ev fnhook.ModuleEvent
	if err := json.Unmarshal(d.Body, &ev); err != nil || ev.Name == "" || ev.Version == "" {
		return fmt.Errorf("bad module event %.200q: %w", d.Body, errors.Join(queue.ErrReject, err))
	}
	failed := d.RoutingKey == fnhook.EventModuleFailed
	switch d.RoutingKey {
	case fnhook.EventModuleReady, fnhook.EventModuleFailed:
	default:
		return fmt.Errorf("unexpected routing key %q: %w", d.RoutingKey, queue.ErrReject)
	}
	return t.ModuleDone(ctx, ev, failed)
}

// ModuleDone turns the functions waiting on module ev ready (when every module they need
// is) or failed, for the function versions that still wait.
func (t *Tracker) ModuleDone(ctx context.Context, ev fnhook.ModuleEvent, failed bool) error {
	key := fnhook.ModuleKey(ev.Name, ev.Version)
	ws, err := t.store.Waiters(ctx, ev.Name, ev.Version)
	if err != nil {
		return err
	}
	for _, w := range ws {
		if err := t.applyOutcome(ctx, w, key, ev.Error, failed); err != nil {
			return fmt.Errorf("apply %s to %s/%s: %w", key, w.Tenant, w.Function, err)
		}
	}
	return nil
}

func (t *Tracker) applyOutcome(ctx context.Context, w store.Waiter, key, why string, failed bool) error {
	for range settleAttempts {
		f, err := t.store.GetFunction(ctx, w.Tenant, w.Function)
		if fnhook.ErrorCode(err) == fnhook.CodeNotFound {
			break
		}
		if err != nil {
			return err
		}
		if f.Version != w.Version || f.Status != fnhook.StatusBuilding || !slices.Contains(f.Pending, key) {
			break // a newer version, or already settled: this wait is over
		}
		if failed && why == "" {
			n, v, _ := splitKey(key)
			if m, found, err := t.store.GetModule(ctx, n, v); err == nil && found {
				why = m.Error
			}
		}
		next := f
		next.Pending = slices.DeleteFunc(slices.Clone(f.Pending), func(p string) bool { return p == key })
		if failed {
			next.Status, next.Error = fnhook.StatusFailed, moduleError(key, why)
		}
		_, err = t.finish(ctx, f, next, []string{key})
		if fnhook.ErrorCode(err) == fnhook.CodeConflict {
			continue
		}
		return err
	}
	n, v, _ := splitKey(key)
	return t.store.RemoveWaiter(ctx, n, v, w.Tenant, w.Function)
}
