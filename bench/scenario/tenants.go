package scenario

import (
	"context"
	"fmt"
	"sync"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/fnhook/fnhook/bench/platform"
	"github.com/fnhook/fnhook/bench/report"
)

// settleLimit bounds the wait, after a scenario deleted its tenants, for the handler to
// let their runners go and for the pool to be quiet again.
const settleLimit = 3 * time.Minute

// tenantsRun deploys n new tenants with the plain function, calls each once, c at a time
// (the first round), then each once more (the second round), looks at the runners right
// after the first round, and deletes the tenants.
func (b *Bench) tenantsRun(ctx context.Context, nc *nomad.Client, n, c int, target bool) report.Tenants {
	res := report.Tenants{N: n, Concurrency: c, Target: target}
	before := b.poolOrUnknown(ctx)
	if err := b.waitQuiet(ctx, nc); err != nil {
		b.log.Warn("pool not quiet before the tenants run; going on", "err", err)
	}
	tenants, err := b.deployTenants(ctx, fmt.Sprintf("t%d", n), n, c)
	defer b.deleteTenants(ctx, nc, tenants, c, before)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	b.log.Info("tenants: first round", "n", n, "concurrency", c)
	res.First = b.round(ctx, tenants, c)
	if m, err := b.runnerMemory(ctx, nc, fmt.Sprintf("after the first round of %d tenants", n)); err != nil {
		b.log.Warn("runner memory after the first round", "err", err)
	} else {
		res.Memory = &m
	}
	b.log.Info("tenants: second round", "n", n, "first_round_ok", res.First.OK)
	res.Second = b.round(ctx, tenants, c)
	b.log.Info("tenants: done", "n", n, "second_round_ok", res.Second.OK)
	return res
}

// burst deploys n new tenants, waits for a quiet pool, sends all their first calls at
// once and deletes the tenants.
func (b *Bench) burst(ctx context.Context, nc *nomad.Client, n int) *report.Burst {
	res := &report.Burst{N: n}
	before := b.poolOrUnknown(ctx)
	tenants, err := b.deployTenants(ctx, "burst", n, b.cfg.TenantsConcurrency)
	defer b.deleteTenants(ctx, nc, tenants, b.cfg.TenantsConcurrency, before)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	if err := b.waitQuiet(ctx, nc); err != nil {
		b.log.Warn("pool not quiet before the burst; sending it anyway", "err", err)
	}
	res.First = b.round(ctx, tenants, n)
	return res
}

// deployTenants creates n tenants named <prefix>-<name>-<i>, each with the plain function
// "fn", c at a time, and returns those it created (also on error, to delete them).
func (b *Bench) deployTenants(ctx context.Context, name string, n, c int) ([]string, error) {
	all := make([]string, n)
	for i := range all {
		all[i] = b.tenant(fmt.Sprintf("%s-%d", name, i))
	}
	var (
		mu       sync.Mutex
		firstErr error
	)
	b.forEach(ctx, all, c, func(t string) {
		if err := b.deploy(ctx, t, "fn", platform.FunctionBody{Code: PlainCode}); err != nil {
			mu.Lock()
			if firstErr == nil {
				firstErr = fmt.Errorf("deploy tenant %s: %w", t, err)
			}
			mu.Unlock()
		}
	})
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return all, firstErr
}

// deleteTenants deletes tenants, c at a time, then waits until the handler holds no more
// runners than before and the pool is quiet.
func (b *Bench) deleteTenants(ctx context.Context, nc *nomad.Client, tenants []string, c int, before platform.Pool) {
	ctx = context.WithoutCancel(ctx) // delete even when interrupted
	b.forEach(ctx, tenants, c, func(t string) {
		if err := b.deleteTenant(ctx, t); err != nil {
			b.log.Warn("delete a bench tenant", "tenant", t, "err", err)
		}
	})
	deadline := time.Now().Add(settleLimit)
	for time.Now().Before(deadline) {
		p, err := b.api.Pool(ctx)
		if err == nil && (before.Assigned < 0 || p.Assigned <= before.Assigned) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	if err := b.waitQuietFor(wctx, nc, time.Until(deadline)); err != nil {
		b.log.Warn("the pool did not settle after deleting the tenants", "err", err)
	}
}

// forEach runs f on every item, c at a time, and returns when all are done. Items not
// started when ctx ends are skipped.
func (b *Bench) forEach(ctx context.Context, items []string, c int, f func(string)) {
	next := make(chan string, len(items))
	for _, it := range items {
		next <- it
	}
	close(next)
	var wg sync.WaitGroup
	for range max(1, min(c, len(items))) {
		wg.Go(func() {
			for it := range next {
				if ctx.Err() == nil {
					f(it)
				}
			}
		})
	}
	wg.Wait()
}

// round calls the function of each tenant once, c at a time; with c >= len(tenants) every
// call starts at the same moment. Calls not started within the round time limit are
// counted as not sent.
func (b *Bench) round(ctx context.Context, tenants []string, c int) report.Round {
	answers := make([]report.Answer, 0, len(tenants))
	var mu sync.Mutex
	next := make(chan string, len(tenants))
	for _, t := range tenants {
		next <- t
	}
	close(next)
	start := make(chan struct{})
	deadline := time.Now().Add(b.cfg.TenantsRoundLimit)
	notSent := 0
	var wg sync.WaitGroup
	for range max(1, min(c, len(tenants))) {
		wg.Go(func() {
			<-start
			for t := range next {
				if ctx.Err() != nil || time.Now().After(deadline) {
					mu.Lock()
					notSent++
					mu.Unlock()
					continue
				}
				a := b.callOnce(ctx, t)
				mu.Lock()
				answers = append(answers, a)
				mu.Unlock()
			}
		})
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	return report.NewRound(answers, notSent, time.Since(t0))
}

// callOnce calls a tenant's function once and says how it went.
func (b *Bench) callOnce(ctx context.Context, t string) report.Answer {
	c, err := b.api.Run(ctx, t, "fn")
	if err != nil {
		return report.Answer{Err: err}
	}
	return answerOf(c)
}

// answerOf is how a round counts a call.
func answerOf(c platform.Call) report.Answer {
	return report.Answer{Status: c.Status, Code: c.Code, RetryAfter: c.RetryAfter != "", Cold: c.Cold,
		Latency: c.Latency, Detail: fmt.Sprintf("%.200s", c.Body)}
}

// poolOrUnknown reads the handler's pool gauges; -1 in each when they cannot be read.
func (b *Bench) poolOrUnknown(ctx context.Context) platform.Pool {
	p, err := b.api.Pool(ctx)
	if err != nil {
		return platform.Pool{Idle: -1, Starting: -1, Assigned: -1}
	}
	return p
}
