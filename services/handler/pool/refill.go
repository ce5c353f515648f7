package pool

import (
	"context"
	"math"
	"time"

	"github.com/fnhook/fnhook/libs/runnerapi"
)

// The idle target follows demand: demandWindow is the time constant of the decaying count
// of runners taken (about the takes of the last minute), and the pool keeps idle the
// runners that many new tenants would take in demandHorizon, which covers a runner's
// start on a busy node (1 s alone, ~5 s for five at once, measured) with room to spare.
const (
	demandWindow  = time.Minute
	demandHorizon = 15 * time.Second
)

// demand is an exponentially decaying count of runners taken: each take adds 1 and the
// sum decays with time constant tau, so at a steady rate r it tends to r*tau.
type demand struct {
	tau time.Duration
	n   float64
	at  time.Time
}

func (d *demand) value(now time.Time) float64 {
	if d.at.IsZero() || !now.After(d.at) {
		return d.n
	}
	return d.n * math.Exp(-now.Sub(d.at).Seconds()/d.tau.Seconds())
}

func (d *demand) add(now time.Time) {
	d.n, d.at = d.value(now)+1, now
}

// idleTarget is how many idle runners to keep: minIdle when quiet, more as new tenants
// arrive (recent is the decaying count of takes), at most a quarter of the node's
// capacity (and never below minIdle).
func idleTarget(minIdle, maxRunners int, recent float64) int {
	want := int(math.Ceil(recent*demandHorizon.Seconds()/demandWindow.Seconds() - 1e-9))
	return max(minIdle, min(want, maxRunners/4))
}

func (p *Pool) idleTargetLocked() int {
	return idleTarget(p.cfg.MinIdle, p.cfg.MaxRunners, p.demand.value(p.now()))
}

// IdleTarget is how many idle runners the pool keeps ready right now.
func (p *Pool) IdleTarget() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.idleTargetLocked()
}

// toStart is how many runners to register now: enough to have target idle or starting,
// plus one per caller waiting in Take, within maxRunners.
func toStart(idleN, startingN, takenN, waiters, target, maxRunners int) int {
	want := target + waiters - idleN - startingN
	room := maxRunners - idleN - startingN - takenN
	return max(0, min(want, room))
}

func (p *Pool) refill() {
	p.mu.Lock()
	if p.ctx == nil || p.ctx.Err() != nil || p.now().Before(p.failUntil) {
		p.mu.Unlock()
		return
	}
	startingN, idleN, takenN := p.countsLocked()
	n := toStart(idleN, startingN, takenN, p.waiters, p.idleTargetLocked(), p.cfg.MaxRunners)
	ctx := p.ctx
	var started []*runner
	for range n {
		id := p.jobs.NewJobID()
		r := &runner{jobID: id, token: runnerapi.Token(p.cfg.Secret, id), state: starting, registered: p.now()}
		// Known before the job exists, so its allocation events are not missed.
		p.byJob[id] = r
		started = append(started, r)
	}
	p.mu.Unlock()
	for _, r := range started {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := p.jobs.Register(rctx, r.jobID, r.token)
			cancel()
			p.mu.Lock()
			defer p.mu.Unlock()
			if err != nil {
				p.m.starts.WithLabelValues("failed").Inc()
				p.startFailedLocked(err.Error())
				p.log.Error("register runner job", "job", r.jobID, "err", err, "failed_in_a_row", p.failedStarts)
				if p.byJob[r.jobID] == r {
					delete(p.byJob, r.jobID)
				}
				p.notifyLocked()
				return
			}
			p.m.starts.WithLabelValues("registered").Inc()
		}()
	}
}

// trimSurplus ends one idle runner beyond the idle target that has been idle for
// demandWindow: runners started for a burst of new tenants hold memory for nothing once
// the burst is over.
func (p *Pool) trimSurplus() {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, idleN, _ := p.countsLocked()
	if idleN <= p.idleTargetLocked() {
		return
	}
	var oldest *runner
	for _, r := range p.byJob {
		if r.state == idle && (oldest == nil || r.idleSince.Before(oldest.idleSince)) {
			oldest = r
		}
	}
	if idleFor := p.now().Sub(oldest.idleSince); idleFor >= demandWindow {
		p.endLocked(oldest, EndSurplus, "idle for "+idleFor.Round(time.Second).String()+" beyond the idle target")
	}
}
