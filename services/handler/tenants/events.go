package tenants

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	fnhook "github.com/fnhook/fnhook/libs"
	"github.com/fnhook/fnhook/libs/queue"
	"github.com/fnhook/fnhook/libs/runnerapi"
	"github.com/fnhook/fnhook/services/handler/pool"
)

// has tells whether the tenant has a runner on this node.
func (t *Table) has(tenant string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	tn := t.tenants[tenant]
	return tn != nil && tn.run != nil
}

// FunctionChanged applies a function event to the tenant's runner on this node, if any:
// a new version is loaded at once, so the next call is warm and already sees it; a
// deleted function is unloaded.
func (t *Table) FunctionChanged(ctx context.Context, ev fnhook.FunctionChanged) error {
	if !t.has(ev.Tenant) {
		return nil
	}
	tn, _, err := t.lock(ctx, ev.Tenant)
	if err != nil {
		return err
	}
	defer t.unlock(tn)
	run := t.current(tn)
	if run == nil {
		return nil
	}
	loaded := t.loaded(run, ev.Function)
	if !ev.Deleted && loaded >= ev.Version {
		return nil
	}
	var f fnhook.Function
	if !ev.Deleted {
		f, err = t.store.GetFunction(ctx, ev.Tenant, ev.Function)
		if fnhook.ErrorCode(err) == fnhook.CodeNotFound {
			ev.Deleted = true
		} else if err != nil {
			return err
		}
	}
	if ev.Deleted {
		if loaded == 0 {
			return nil
		}
		err := t.runners.Unload(ctx, run.API(), ev.Function)
		if err != nil && !runnerapi.IsCode(err, fnhook.CodeFunctionNotLoaded) {
			t.drop(run, pool.EndLoadFailed, fmt.Sprintf("unload %s: %v", ev.Function, err))
			return nil
		}
		t.mu.Lock()
		delete(run.functions, ev.Function)
		t.mu.Unlock()
		t.log.Info("function unloaded", "tenant", ev.Tenant, "function", ev.Function, "job", run.JobID)
		return nil
	}
	if f.Status != fnhook.StatusReady || f.Version <= loaded {
		return nil // the resolve after its build loads it
	}
	if err := t.modules.Ensure(ctx, f.ResolvedDependencies); err != nil {
		t.log.Warn("modules of a changed function", "tenant", ev.Tenant, "function", ev.Function, "err", err)
		return nil
	}
	v, err := t.load(ctx, run, f)
	if err != nil {
		if runnerFault(err) {
			t.drop(run, pool.EndLoadFailed, fmt.Sprintf("load %s v%d: %v", f.Name, f.Version, err))
		}
		t.log.Warn("load a changed function", "tenant", ev.Tenant, "function", ev.Function, "err", err)
		return nil
	}
	t.log.Info("function reloaded", "tenant", ev.Tenant, "function", ev.Function, "version", v, "job", run.JobID)
	return nil
}

// TenantDeleted ends the tenant's runner on this node, if any.
func (t *Table) TenantDeleted(ctx context.Context, ev fnhook.TenantDeleted) error {
	tn, _, err := t.lock(ctx, ev.Tenant)
	if err != nil {
		return err
	}
	defer t.unlock(tn)
	if run := t.current(tn); run != nil {
		t.drop(run, pool.EndDeleted, "tenant deleted")
	}
	return nil
}

// Consume applies function.changed and tenant.deleted events from an exclusive queue of
// this handler until ctx ends.
func (t *Table) Consume(ctx context.Context, q *queue.Conn) error {
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
			return t.FunctionChanged(ctx, ev)
		case fnhook.EventTenantDeleted:
			var ev fnhook.TenantDeleted
			if err := json.Unmarshal(d.Body, &ev); err != nil || ev.Tenant == "" {
				return fmt.Errorf("%w: bad %s event: %v", queue.ErrReject, d.RoutingKey, err)
			}
			return t.TenantDeleted(ctx, ev)
		}
		return nil
	})
}
