package pool

import (
	"context"
	"time"

	"github.com/fnhook/fnhook/libs/runnerapi"
	"github.com/fnhook/fnhook/services/handler/runnerjob"
)

// recoveryGrace bounds how long recovered runners may take to answer before the pool
// serves without them (they are then ended if they never answer).
const recoveryGrace = 15 * time.Second

// Recover adopts the runner jobs a previous handler of this node left: their tokens are
// recomputed, and each is asked for its state once it answers, so idle runners rejoin
// the pool and runners that serve a tenant go to the Owner given to Run (the tenant
// keeps its runner across a handler restart). Call it before Run.
func (p *Pool) Recover(jobs []runnerjob.Job) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	for _, j := range jobs {
		if p.byJob[j.ID] != nil {
			continue
		}
		if j.Dead || (j.Alloc != nil && j.Alloc.Terminal) {
			p.stopLater(j.ID, EndAllocation) // stops if need be, then purges
			continue
		}
		r := &runner{jobID: j.ID, token: runnerapi.Token(p.cfg.Secret, j.ID), state: starting,
			registered: now, recovered: true, unprobed: true}
		if j.Alloc != nil {
			r.address, r.allocID = j.Alloc.Address, j.Alloc.ID
		}
		p.byJob[j.ID] = r
		p.recovering++
	}
	p.log.Info("recovering runners", "jobs", len(p.byJob))
}

// WaitRecovered waits until every recovered runner was asked whom it serves (or the
// recovery grace passed), so that a tenant whose runner survived a restart is not given
// a second one.
func (p *Pool) WaitRecovered(ctx context.Context) error {
	select {
	case <-p.recovered:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

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
