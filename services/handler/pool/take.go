package pool

import (
	"context"
	"errors"
	"time"
)

// ErrFull is returned by Take when no runner is idle and the node has no room to start
// one for this caller: every runner it can hold is taken, or starting for callers that
// came first. Waiting does not help; the caller frees room (ends a tenant's runner) or
// gives up.
var ErrFull = errors.New("every runner the node can hold is taken")

// Take hands out an idle runner, which leaves the pool for good: the caller assigns it to
// a tenant and ends it with End. Without an idle runner it waits, until ctx ends, for one
// that is starting or that the pool starts for it; it fails at once with ErrFull when the
// node has no room for one more.
func (p *Pool) Take(ctx context.Context) (Runner, error) {
	if err := p.WaitRecovered(ctx); err != nil {
		return Runner{}, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.waiters++
	defer func() { p.waiters-- }()
	for {
		if r := p.pickIdleLocked(); r != nil {
			r.state = taken
			p.demand.add(p.now())
			if p.cfg.RefillDelay > 0 && p.pickIdleLocked() != nil {
				time.AfterFunc(p.cfg.RefillDelay, p.kickRefill)
			} else {
				p.kickRefill()
			}
			return r.snapshot(), nil
		}
		startingN, idleN, takenN := p.countsLocked()
		room := p.cfg.MaxRunners - startingN - idleN - takenN
		if startingN+room < p.waiters {
			return Runner{}, ErrFull
		}
		ch := p.changed
		p.kickRefill()
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		}
		p.mu.Lock()
		if ctx.Err() != nil {
			return Runner{}, ctx.Err()
		}
	}
}
