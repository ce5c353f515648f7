package tenants

import (
	"context"
	"errors"
	"fmt"
	"time"

	fnhook "github.com/fnhook/fnhook/libs"
	"github.com/fnhook/fnhook/services/handler/pool"
)

// maxAssigns bounds how many runners one acquisition tries when they refuse the tenant.
const maxAssigns = 3

// runnerFor returns the tenant's runner, giving it one when it has none (assigned is then
// true). The caller holds the tenant's lock. A runner comes from the pool; when the node
// is full, the least recently used runner with no call in flight is evicted to make room,
// and the wait for the fresh runner starts anew (a runner start on a busy node takes
// seconds, and the room was made for this tenant); when none is evictable it waits up to
// AssignWait for a call to end, then answers ErrNoCapacity.
func (t *Table) runnerFor(ctx context.Context, tn *tenant) (run *runner, assigned bool, err error) {
	if run := t.current(tn); run != nil {
		return run, false, nil
	}
	// actx ends AssignWait from now, or from the last eviction made for this tenant.
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	wait := time.AfterFunc(t.cfg.AssignWait, cancel)
	defer wait.Stop()
	// A runner this tenant had before a handler restart may still be on its way back.
	if err := t.pool.WaitRecovered(actx); err == nil {
		if run := t.current(tn); run != nil {
			return run, false, nil
		}
	}
	// Tenants that meet a full node queue in arrival order, and newcomers queue behind
	// them: otherwise the runner an eviction started for one tenant goes to whoever asks
	// first, and under a steady stream of new tenants one of them may wait in vain.
	queued := false
	enqueue := func() bool {
		if queued {
			return true
		}
		t.fullWaiters.Add(1)
		select {
		case t.full <- struct{}{}:
			queued = true
			return true
		case <-actx.Done():
			t.fullWaiters.Add(-1)
			return false
		}
	}
	defer func() {
		if queued {
			<-t.full
			t.fullWaiters.Add(-1)
		}
	}()
	if t.fullWaiters.Load() > 0 {
		enqueue()
	}
	delay := 50 * time.Millisecond
	for assigns := 0; actx.Err() == nil; {
		r, err := t.pool.Take(actx)
		switch {
		case err == nil:
			run, err := t.assign(actx, tn, r)
			if err == nil {
				return run, true, nil
			}
			t.pool.End(r.JobID, pool.EndAssignFailed, err.Error())
			if assigns++; assigns >= maxAssigns {
				if ctx.Err() != nil {
					return nil, false, ctx.Err()
				}
				return nil, false, &fnhook.Error{Code: fnhook.CodeUnavailable, Message: "no runner took the tenant; retry shortly",
					Err: fmt.Errorf("assign a runner to %s: %w", tn.name, err)}
			}
		case errors.Is(err, pool.ErrFull):
			if !enqueue() {
				continue
			}
			if t.evict(actx, tn.name) {
				wait.Reset(t.cfg.AssignWait)
				delay = 50 * time.Millisecond
				continue
			}
			// Every other runner has a call in flight (or someone works on its tenant):
			// wait for one to end.
			select {
			case <-time.After(delay):
			case <-actx.Done():
			}
			delay = min(2*delay, time.Second)
		}
	}
	if ctx.Err() != nil {
		return nil, false, ctx.Err()
	}
	t.m.noCapacity.Inc()
	return nil, false, ErrNoCapacity
}

// assign binds runner r to the tenant, on the runner and in the table.
func (t *Table) assign(ctx context.Context, tn *tenant, r pool.Runner) (*runner, error) {
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := t.runners.Assign(actx, r.API(), tn.name)
	cancel()
	if err != nil {
		return nil, err
	}
	t.m.assigns.Inc()
	now := t.now()
	run := &runner{Runner: r, tenant: tn.name, functions: map[string]int{}, lastUsed: now}
	t.mu.Lock()
	t.attachLocked(tn, run)
	t.mu.Unlock()
	return run, nil
}
