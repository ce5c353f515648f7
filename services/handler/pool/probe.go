package pool

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/fnhook/fnhook/libs/runnerapi"
	"github.com/fnhook/fnhook/services/handler/runnerjob"
)

// Observe takes an allocation update of one of the pool's runner jobs (from the Nomad
// event stream): it learns the runner's address, and ends runners whose allocation
// stopped (telling the Owner when the runner was taken).
func (p *Pool) Observe(jobID string, a runnerjob.Alloc) {
	p.mu.Lock()
	tell := p.observeLocked(jobID, a)
	p.mu.Unlock()
	tell()
}

func (p *Pool) observeLocked(jobID string, a runnerjob.Alloc) (tell func()) {
	r := p.byJob[jobID]
	if r == nil || (r.allocID != "" && a.ID != r.allocID) {
		return func() {} // not ours, or not the allocation we know (there is one per job)
	}
	if a.Terminal {
		detail := "allocation " + a.ClientStatus
		if a.Failure != "" {
			// Nomad's own words (a driver's error) tell the operator what to fix.
			detail += ": " + a.Failure
		}
		reason := EndAllocation
		if r.state == starting {
			reason = EndFailedStart
		}
		return p.lostLocked(r, reason, detail)
	}
	r.allocID = a.ID
	if r.address == "" && a.Address != "" {
		r.address = a.Address
		p.probeLocked(r)
	}
	return func() {}
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
		_, err := p.prober.Health(hctx, r.address)
		var st runnerapi.State
		if err == nil {
			st, err = p.prober.State(hctx, api)
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
			p.End(r.jobID, EndFailedStart, fmt.Sprintf("not ready within %s: %v", p.cfg.StartTimeout, err))
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

// becameReady places a runner that answered: idle when it serves no one, with the Owner
// when a recovered runner serves a tenant, ended when its state is none the handler gave.
func (p *Pool) becameReady(r *runner, st runnerapi.State) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r.probing = false
	if p.byJob[r.jobID] != r || r.state != starting {
		return
	}
	defer p.recoveredLocked(r)
	switch {
	case st.Tenant == "" && len(st.Functions) == 0:
		r.state, r.idleSince = idle, p.now()
		p.failDelay = 0
		if !r.recovered {
			// Only a runner the pool started proves that starts work again.
			p.failedStarts = 0
			p.m.ready.Observe(p.now().Sub(r.registered).Seconds())
			p.log.Info("runner ready", "job", r.jobID, "address", r.address, "took", p.now().Sub(r.registered))
		}
		p.notifyLocked()
		p.kickRefill()
	case st.Tenant == "":
		// Code without a tenant: nothing the handler did. Never trust it.
		p.endLocked(r, EndForeign, "holds functions without a tenant")
	case !r.recovered:
		p.endLocked(r, EndForeign, "a new runner says it serves tenant "+st.Tenant)
	default:
		owner := p.owner
		p.mu.Unlock()
		adopted := owner != nil && owner.Adopt(r.snapshot(), st)
		p.mu.Lock()
		switch {
		case p.byJob[r.jobID] != r:
			if adopted {
				// It ended while the owner took it: the owner must forget it again.
				p.mu.Unlock()
				owner.Lost(r.jobID, EndAllocation)
				p.mu.Lock()
			}
		case adopted:
			r.state = taken
			p.log.Info("runner recovered", "job", r.jobID, "tenant", st.Tenant, "functions", len(st.Functions))
		default:
			p.endLocked(r, EndForeign, "a second runner of tenant "+st.Tenant)
		}
	}
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
			p.endLocked(r, EndFailedStart, fmt.Sprintf("not placed within %s", p.cfg.StartTimeout))
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

// checkHealth asks every ready runner, idle or taken, for /healthz: HealthFailures
// failures in a row end it (the Owner hears of a taken one), and an idle runner that says
// it is assigned was assigned by someone else and ends too.
func (p *Pool) checkHealth(ctx context.Context) {
	p.mu.Lock()
	var rs []*runner
	for _, r := range p.byJob {
		if r.state != starting {
			rs = append(rs, r)
		}
	}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, r := range rs {
		wg.Go(func() {
			hctx, cancel := context.WithTimeout(ctx, time.Second)
			h, err := p.prober.Health(hctx, r.address)
			cancel()
			if ctx.Err() != nil {
				return
			}
			p.mu.Lock()
			tell := p.judgeLocked(r, h, err)
			p.mu.Unlock()
			tell()
		})
	}
	wg.Wait()
}

func (p *Pool) judgeLocked(r *runner, h runnerapi.Health, err error) (tell func()) {
	if p.byJob[r.jobID] != r {
		return func() {}
	}
	if err != nil {
		r.healthFails++
		if r.healthFails >= p.cfg.HealthFailures {
			return p.lostLocked(r, EndUnhealthy, fmt.Sprintf("%d health checks failed: %v", r.healthFails, err))
		}
		return func() {}
	}
	r.healthFails = 0
	if r.state == idle && h.State != runnerapi.StateIdle {
		p.endLocked(r, EndForeign, "idle runner reports "+h.State)
	}
	return func() {}
}
