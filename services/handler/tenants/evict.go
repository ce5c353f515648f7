package tenants

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/fnhook/fnhook/services/handler/pool"
)

// candidate is a tenant's runner that may be ended, as listed at one moment.
type candidate struct {
	run *runner
	// seen is the runner's lastResolve when listed: a resolve since makes it busy again.
	seen     time.Time
	lastUsed time.Time
}

// candidates lists the runners that may be ended now, least recently used first: no one
// works on their tenant (its lock is free), no resolve sent a call there within callSlack,
// and keep accepts them.
func (t *Table) candidates(keep func(*runner) bool) []candidate {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	var out []candidate
	for _, tn := range t.tenants {
		run := tn.run
		if run == nil || tn.refs > 0 || now.Before(run.lastResolve.Add(callSlack)) || !keep(run) {
			continue
		}
		out = append(out, candidate{run: run, seen: run.lastResolve, lastUsed: run.lastUsed})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].lastUsed.Before(out[j].lastUsed) })
	return out
}

// activity is what a runner says of its calls.
type activity struct {
	last time.Time // its last call ended then (or it is busy now)
	busy bool      // a call is in flight
}

// activity asks the runner what the table cannot see (calls through the gateway's cached
// routes go straight to it) and records it. A runner that does not report its calls in
// flight is busy while a call its last resolve routed may run (busyUntil).
func (t *Table) activity(ctx context.Context, run *runner) (activity, error) {
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	st, err := t.runners.State(sctx, run.API())
	cancel()
	if err != nil {
		return activity{}, err
	}
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if st.IdleMs != nil {
		if last := now.Add(-time.Duration(*st.IdleMs) * time.Millisecond); last.After(run.lastUsed) {
			run.lastUsed = last
		}
	}
	busy := now.Before(run.busyUntil)
	if st.Inflight != nil {
		busy = *st.Inflight > 0
	}
	if busy {
		run.lastUsed = now
	}
	return activity{last: run.lastUsed, busy: busy}, nil
}

// retire takes c's runner from its tenant and ends it, unless something happened to it
// since it was listed (the tenant got a resolve, someone works on it, it lost the runner).
func (t *Table) retire(c candidate, reason pool.EndReason, detail string) bool {
	t.mu.Lock()
	tn := t.tenants[c.run.tenant]
	ok := tn != nil && tn.run == c.run && tn.refs == 0 && c.run.lastResolve.Equal(c.seen) && t.detachLocked(c.run)
	t.mu.Unlock()
	if !ok {
		return false
	}
	t.pool.End(c.run.JobID, reason, detail)
	t.log.Info("tenant runner ended", "tenant", c.run.tenant, "job", c.run.JobID, "reason", reason.String(), "detail", detail)
	return true
}

// evict ends the runner of the least recently used tenant with no call in flight, to make
// room for newcomer; it reports whether it ended one. The order is by the last call each
// runner reports; the table's own view (the last resolve) is never more recent than
// that, so runners are asked oldest first and one is ended as soon as none still unasked
// can be older. A runner that does not answer is ended as unhealthy, which frees the room
// as well. Nothing is evicted while no runner can start (the pool is degraded): the
// newcomer would not get the room.
func (t *Table) evict(ctx context.Context, newcomer string) bool {
	if t.pool.Degraded() != "" {
		return false
	}
	now := t.now()
	cands := t.candidates(func(run *runner) bool { return run.tenant != newcomer })
	var quiet []candidate // asked: no call in flight, lastUsed as they report it
	for next := 0; ; {
		oldest := -1
		for i, q := range quiet {
			if oldest < 0 || q.lastUsed.Before(quiet[oldest].lastUsed) {
				oldest = i
			}
		}
		if oldest >= 0 && (next == len(cands) || !cands[next].lastUsed.Before(quiet[oldest].lastUsed)) {
			c := quiet[oldest]
			quiet = append(quiet[:oldest], quiet[oldest+1:]...)
			detail := fmt.Sprintf("least recently used (last call %s ago), for tenant %s", now.Sub(c.lastUsed).Round(time.Millisecond), newcomer)
			if t.retire(c, pool.EndEvicted, detail) {
				t.m.evictions.Inc()
				return true
			}
			continue
		}
		if next == len(cands) {
			return false
		}
		c := cands[next]
		next++
		a, err := t.activity(ctx, c.run)
		if err != nil {
			if ctx.Err() != nil {
				return false
			}
			if t.retire(c, pool.EndUnhealthy, fmt.Sprintf("state before an eviction: %v", err)) {
				return true
			}
			continue
		}
		if !a.busy {
			c.lastUsed = a.last
			quiet = append(quiet, c)
		}
	}
}
