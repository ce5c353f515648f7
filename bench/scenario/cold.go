package scenario

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/fnhook/fnhook/bench/platform"
	"github.com/fnhook/fnhook/bench/report"
	"github.com/fnhook/fnhook/bench/stats"
)

// coldKind is one kind of cold function and its samples.
type coldKind struct {
	kind          string
	n             int
	body          platform.FunctionBody
	first, second []time.Duration
	res           report.Cold
}

// cold measures the first and second call of fresh tenants, dayjs and no-deps interleaved
// so drift on the machine hits both alike. Before each first call the pool must have an
// idle runner and Nomad must be quiet (no runner starting or stopping): cold means "pool
// warm, modules on the node". Each tenant is deleted after its two calls, so its runner is
// recycled. It also returns require() of dayjs in a fresh node on the host.
func (b *Bench) cold(ctx context.Context) ([]report.Cold, string, stats.Summary) {
	deps := &coldKind{kind: report.KindDeps, n: b.cfg.ColdN,
		body: platform.FunctionBody{Code: DepsCode, Dependencies: map[string]string{DepsModule: DepsRange}}}
	plain := &coldKind{kind: report.KindNoDeps, n: b.cfg.ColdNoDepsN, body: platform.FunctionBody{Code: PlainCode}}
	deps.res.Kind, plain.res.Kind = deps.kind, plain.kind

	// A first tenant gets dayjs built (if it never was) and unpacked on the node.
	t := b.tenant("cold-warmup")
	version, err := b.warmModules(ctx, t, deps.body)
	if err != nil {
		deps.res.Error = "warm-up: " + err.Error()
		plain.res.Error = deps.res.Error
		return []report.Cold{deps.res, plain.res}, "", stats.Summary{}
	}
	module := DepsModule + "@" + version
	require := b.requireTime(ctx, module)

	nc, err := nomadClient(b.cfg.NomadAddr)
	if err != nil {
		b.log.Warn("no Nomad client: cold calls will not wait for Nomad to be quiet", "err", err)
	}
	for i := 0; i < max(deps.n, plain.n) && ctx.Err() == nil; i++ {
		for _, k := range []*coldKind{deps, plain} {
			if i < k.n {
				if !b.coldOne(ctx, nc, k, i) && nc != nil {
					// Nomad never got quiet in time (a stuck allocation?): go on with the
					// pool gauges alone rather than wait that long before every call.
					b.log.Warn("no longer waiting for Nomad to be quiet before cold calls")
					nc = nil
				}
			}
		}
		if (i+1)%10 == 0 {
			b.log.Info("cold progress", "done", i+1)
		}
	}
	out := make([]report.Cold, 0, 2)
	for _, k := range []*coldKind{deps, plain} {
		k.res.First, k.res.Second = stats.Summarize(k.first), stats.Summarize(k.second)
		out = append(out, k.res)
	}
	return out, module, require
}

// warmModules deploys the dependency function once, calls it, and returns the dependency's
// resolved version.
func (b *Bench) warmModules(ctx context.Context, t string, body platform.FunctionBody) (string, error) {
	defer func() {
		if err := b.deleteTenant(ctx, t); err != nil {
			b.log.Warn("delete the warm-up tenant", "err", err)
		}
	}()
	if err := b.deploy(ctx, t, "fn", body); err != nil {
		return "", err
	}
	if err := b.firstCall(ctx, t, "fn"); err != nil {
		return "", err
	}
	f, err := b.api.GetFunction(ctx, t, "fn")
	if err != nil {
		return "", err
	}
	v := f.ResolvedDependencies[DepsModule]
	if v == "" {
		return "", fmt.Errorf("function %s/fn has no resolved version of %s", t, DepsModule)
	}
	return v, nil
}

// coldOne deploys a fresh tenant of kind k, waits for a quiet warm pool, calls it twice
// and deletes it. It returns false when the wait for a quiet pool timed out.
func (b *Bench) coldOne(ctx context.Context, nc *nomad.Client, k *coldKind, i int) bool {
	t := b.tenant(fmt.Sprintf("cold-%s-%d", k.kind, i))
	fail := func(err error) {
		k.res.Errors++
		if k.res.Error == "" {
			k.res.Error = fmt.Sprintf("tenant %d: %v", i, err)
		}
	}
	if err := b.deploy(ctx, t, "fn", k.body); err != nil {
		fail(err)
		b.deleteTenant(ctx, t)
		return true
	}
	quiet := true
	if err := b.waitQuiet(ctx, nc); err != nil {
		b.log.Warn("pool not quiet before a cold call; calling anyway", "err", err)
		quiet = false
	}
	before, _ := b.api.Pool(ctx)
	first, err := b.api.Run(ctx, t, "fn")
	if err == nil && first.Status != http.StatusOK {
		err = fmt.Errorf("first call: status %d: %.300s", first.Status, first.Body)
	}
	var second platform.Call
	if err == nil {
		second, err = b.api.Run(ctx, t, "fn")
		if err == nil && second.Status != http.StatusOK {
			err = fmt.Errorf("second call: status %d: %.300s", second.Status, second.Body)
		}
	}
	if err != nil {
		fail(err)
	} else {
		k.first = append(k.first, first.Latency)
		k.second = append(k.second, second.Latency)
		if !first.Cold {
			k.res.NotCold++
		}
	}
	if err := b.deleteTenant(ctx, t); err != nil {
		b.log.Warn("delete a cold tenant", "tenant", t, "err", err)
		return quiet
	}
	// Wait until the handler has let the tenant's runner go, so its end does not overlap
	// the next cold call.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		p, err := b.api.Pool(ctx)
		if err != nil || p.Assigned <= before.Assigned {
			return quiet
		}
		time.Sleep(20 * time.Millisecond)
	}
	return quiet
}

// waitQuiet waits until the pool has an idle runner and none starting, and no Nomad
// allocation is stopping, for up to FNHOOK_BENCH_POOL_WAIT.
func (b *Bench) waitQuiet(ctx context.Context, nc *nomad.Client) error {
	return b.waitQuietFor(ctx, nc, b.cfg.PoolWait)
}

// waitQuietFor is waitQuiet for up to limit.
func (b *Bench) waitQuietFor(ctx context.Context, nc *nomad.Client, limit time.Duration) error {
	return b.waitPool(ctx, nc, limit, 1)
}

// waitPool waits up to limit until the pool has at least idle idle runners (and at least
// one) and none starting, and Nomad starts or stops no runner allocation.
func (b *Bench) waitPool(ctx context.Context, nc *nomad.Client, limit time.Duration, idle int) error {
	idle = max(1, idle)
	deadline := time.Now().Add(limit)
	var why string
	for {
		p, err := b.api.Pool(ctx)
		switch {
		case err != nil:
			why = err.Error()
		case p.Idle < idle || p.Starting > 0:
			why = fmt.Sprintf("pool idle %d (want %d), starting %d", p.Idle, idle, p.Starting)
		default:
			why = stopping(ctx, nc)
		}
		if why == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %s", limit.Round(time.Second), why)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// runnerJobPrefix starts the job id of every runner (services/handler, FNHOOK_RUNNER_JOB_PREFIX).
const runnerJobPrefix = "fnhook-runner-"

// stopping names an allocation Nomad is still stopping or starting, or returns "".
func stopping(ctx context.Context, nc *nomad.Client) string {
	if nc == nil {
		return ""
	}
	// Runner jobs live in a namespace of their own (FNHOOK_RUNNER_NAMESPACE): look in all.
	allocs, _, err := nc.Allocations().List((&nomad.QueryOptions{Namespace: "*"}).WithContext(ctx))
	if err != nil {
		return "list allocations: " + err.Error()
	}
	for _, a := range allocs {
		if !strings.HasPrefix(a.JobID, runnerJobPrefix) {
			continue // not a runner: another user of this Nomad
		}
		live := a.ClientStatus == nomad.AllocClientStatusRunning || a.ClientStatus == nomad.AllocClientStatusPending
		if live && a.DesiredStatus != nomad.AllocDesiredStatusRun {
			return "allocation " + a.ID[:8] + " of " + a.JobID + " is stopping"
		}
		if a.ClientStatus == nomad.AllocClientStatusPending {
			return "allocation " + a.ID[:8] + " of " + a.JobID + " is starting"
		}
	}
	return ""
}

func nomadClient(addr string) (*nomad.Client, error) {
	cfg := nomad.DefaultConfig()
	cfg.Address = addr
	return nomad.NewClient(cfg)
}

// requireTime times require() of module (name@version) in fresh node processes on the
// host, from the node's module cache: the function's own part of a cold call.
func (b *Bench) requireTime(ctx context.Context, module string) stats.Summary {
	name, _, _ := strings.Cut(module, "@")
	dir := filepath.Join(b.cfg.ModulesDir, module, "node_modules", name)
	if _, err := os.Stat(dir); err != nil {
		b.log.Warn("module not in the node's cache; require time not measured", "dir", dir, "err", err)
		return stats.Summary{}
	}
	const src = `const t = process.hrtime.bigint(); require(process.argv[1]); process.stdout.write(String(process.hrtime.bigint() - t));`
	var samples []time.Duration
	for range b.cfg.RequireN {
		out, err := exec.CommandContext(ctx, b.cfg.Node, "-e", src, dir).Output()
		if err != nil {
			b.log.Warn("require time", "err", err)
			return stats.Summary{}
		}
		ns, err := strconv.ParseInt(string(bytes.TrimSpace(out)), 10, 64)
		if err != nil {
			b.log.Warn("require time", "out", string(out))
			return stats.Summary{}
		}
		samples = append(samples, time.Duration(ns))
	}
	return stats.Summarize(samples)
}

// naive times `node floor.js --once`: a process spawned per request that runs the
// function once and prints its answer.
func (b *Bench) naive(ctx context.Context) report.Section {
	var samples []time.Duration
	for range b.cfg.NaiveN {
		cmd := exec.CommandContext(ctx, b.cfg.Node, b.dir+"/floor.js", "--once")
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "FNHOOK_BENCH_FUNCTION=" + PlainCode}
		t0 := time.Now()
		out, err := cmd.Output()
		d := time.Since(t0)
		if err != nil {
			return report.Section{Error: fmt.Sprintf("node floor.js --once: %v", err)}
		}
		if !bytes.Contains(out, []byte(`"ok":true`)) {
			return report.Section{Error: fmt.Sprintf("node floor.js --once printed %.200q", out)}
		}
		samples = append(samples, d)
	}
	return report.Section{Latency: stats.Summarize(samples)}
}
