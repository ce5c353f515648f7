package pool

import (
	"context"
	"time"
)

// EndReason says why a runner ended. It is the label of fnhook_handler_runner_ends_total
// and the "reason" of the log line; the free-text detail beside it is for people only.
type EndReason int

// Why runners end.
const (
	// EndIdle: its tenant did not call it for the idle timeout.
	EndIdle EndReason = iota + 1
	// EndEvicted: the node was full and its tenant was the least recently used one with no
	// call in flight; another tenant got the room.
	EndEvicted
	// EndDeleted: its tenant was deleted.
	EndDeleted
	// EndUnhealthy: it failed its health checks, or did not answer a state request.
	EndUnhealthy
	// EndFailedStart: it never became ready: Nomad did not place it, its allocation ended
	// first, or it did not answer within the start timeout. Counts towards Degraded.
	EndFailedStart
	// EndAllocation: the allocation of a ready runner stopped (stopped from outside, the
	// task exited, the node was lost).
	EndAllocation
	// EndAssignFailed: it did not take the tenant it was given.
	EndAssignFailed
	// EndLoadFailed: it broke while loading or unloading a function.
	EndLoadFailed
	// EndForeign: it is in a state the handler did not put it in (code without a tenant,
	// a tenant on a runner the pool thinks idle, a second runner of one tenant, another
	// tenant than its own): never trusted.
	EndForeign
	// EndSurplus: an idle runner beyond the idle target, unused for demandWindow.
	EndSurplus
)

var endReasonNames = map[EndReason]string{
	EndIdle: "idle", EndEvicted: "evicted", EndDeleted: "deleted", EndUnhealthy: "unhealthy",
	EndFailedStart: "failed_start", EndAllocation: "allocation_ended", EndAssignFailed: "assign_failed",
	EndLoadFailed: "load_failed", EndForeign: "foreign", EndSurplus: "surplus",
}

// String is the reason's metric label.
func (r EndReason) String() string {
	if s, ok := endReasonNames[r]; ok {
		return s
	}
	return "unknown"
}

// End stops the runner's job and forgets it; the pool refills. detail says why in words
// (the log line's "detail").
func (p *Pool) End(jobID string, reason EndReason, detail string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r := p.byJob[jobID]; r != nil {
		p.endLocked(r, reason, detail)
	}
}

// endLocked forgets the runner at once (no new route points at it) and stops its job in
// the background.
func (p *Pool) endLocked(r *runner, reason EndReason, detail string) {
	if p.byJob[r.jobID] != r {
		return
	}
	delete(p.byJob, r.jobID)
	p.recoveredLocked(r)
	p.m.ends.WithLabelValues(reason.String()).Inc()
	if r.state == starting && !r.recovered {
		// A runner that dies before it answers points at the template or the node:
		// back off rather than register replacements in a tight loop.
		p.startFailedLocked(detail)
		p.log.Error("runner failed before it was ready", "job", r.jobID, "reason", reason.String(), "detail", detail,
			"retry_in", p.failDelay, "failed_in_a_row", p.failedStarts)
	} else {
		p.log.Info("runner ended", "job", r.jobID, "state", r.state.String(), "reason", reason.String(), "detail", detail)
	}
	p.stopLater(r.jobID, reason)
	p.notifyLocked()
	p.kickRefill()
}

// lostLocked ends a runner on the pool's own account and returns what to tell its owner
// once the lock is released (nothing unless the runner was taken).
func (p *Pool) lostLocked(r *runner, reason EndReason, detail string) (tell func()) {
	wasTaken := r.state == taken && p.byJob[r.jobID] == r
	p.endLocked(r, reason, detail)
	if !wasTaken || p.owner == nil {
		return func() {}
	}
	owner, id := p.owner, r.jobID
	return func() { owner.Lost(id, reason) }
}

func (p *Pool) stopLater(jobID string, reason EndReason) {
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
			p.log.Error("stop runner job", "job", jobID, "reason", reason.String(), "err", err)
		}
	}()
}
