package tenants

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	fnhook "github.com/fnhook/fnhook/libs"
	"github.com/fnhook/fnhook/libs/runnerapi"
	"github.com/fnhook/fnhook/services/handler/pool"
	"github.com/fnhook/fnhook/services/handler/runnerjob"
)

// This test wires the real pool to the real table, with the runner protocol and Nomad
// faked, and checks from the stacks that a resolve crosses the table once: at every call
// it makes to a runner or to Nomad, the stack holds one run of table frames, never a
// table frame below a pool frame; and the pool never calls the table back (Owner) from
// within a resolve.

const (
	tenantsPkg = "github.com/fnhook/fnhook/services/handler/tenants."
	poolPkg    = "github.com/fnhook/fnhook/services/handler/pool."
)

// stackPath is the packages of the current stack's non-test frames from the outermost in,
// with repeats folded and frames of other packages left out: e.g. "tenants>pool".
func stackPath() (path string, inResolve bool) {
	pcs := make([]uintptr, 64)
	n := runtime.Callers(3, pcs)
	frames := runtime.CallersFrames(pcs[:n])
	var inner []string
	for {
		f, more := frames.Next()
		switch {
		case strings.HasSuffix(f.File, "_test.go"): // the test and its fakes
		case strings.HasPrefix(f.Function, tenantsPkg):
			inner = append(inner, "tenants")
			if strings.HasSuffix(f.Function, "(*Table).Resolve") {
				inResolve = true
			}
		case strings.HasPrefix(f.Function, poolPkg):
			inner = append(inner, "pool")
		}
		if !more {
			break
		}
	}
	var out []string
	for i := len(inner) - 1; i >= 0; i-- {
		if len(out) == 0 || out[len(out)-1] != inner[i] {
			out = append(out, inner[i])
		}
	}
	return strings.Join(out, ">"), inResolve
}

// node fakes Nomad (runnerjob) and every runner's protocol; it records the stack path of
// each call made within a resolve.
type node struct {
	mu      sync.Mutex
	seq     int
	p       *pool.Pool
	runners map[string]*fakeRunner
	paths   map[string]int // "call: path" -> count
	bounced []string       // Owner calls made within a resolve
}

func (n *node) record(call string) {
	path, inResolve := stackPath()
	if !inResolve {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.paths[call+": "+path]++
}

func (n *node) NewJobID() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.seq++
	return fmt.Sprintf("job-%02d", n.seq)
}

func (n *node) Register(_ context.Context, jobID, _ string) error {
	n.record("nomad register")
	n.mu.Lock()
	n.runners[jobID] = &fakeRunner{functions: map[string]int{}, inflight: new(int), idleMs: new(int64)}
	n.mu.Unlock()
	go n.p.Observe(jobID, runnerjob.Alloc{ID: "alloc-" + jobID, Address: jobID, ClientStatus: "running"})
	return nil
}

func (n *node) Deregister(_ context.Context, jobID string) error {
	n.record("nomad deregister")
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.runners, jobID)
	return nil
}

func (n *node) Alloc(context.Context, string) (*runnerjob.Alloc, error) { return nil, nil }

func (n *node) Health(context.Context, string) (runnerapi.Health, error) {
	n.record("runner health")
	return runnerapi.Health{State: runnerapi.StateIdle}, nil
}

func (n *node) State(_ context.Context, r runnerapi.Runner) (runnerapi.State, error) {
	n.record("runner state")
	n.mu.Lock()
	defer n.mu.Unlock()
	fr := n.runners[r.Address]
	if fr == nil {
		return runnerapi.State{}, fmt.Errorf("connection refused")
	}
	fns := map[string]int{}
	for k, v := range fr.functions {
		fns[k] = v
	}
	return runnerapi.State{Tenant: fr.tenant, Functions: fns, Inflight: fr.inflight, IdleMs: fr.idleMs}, nil
}

func (n *node) Assign(_ context.Context, r runnerapi.Runner, tenant string) error {
	n.record("runner assign")
	n.mu.Lock()
	defer n.mu.Unlock()
	n.runners[r.Address].tenant = tenant
	return nil
}

func (n *node) Load(_ context.Context, r runnerapi.Runner, name string, f runnerapi.Function) (runnerapi.Loaded, error) {
	n.record("runner load")
	n.mu.Lock()
	defer n.mu.Unlock()
	n.runners[r.Address].functions[name] = f.Version
	return runnerapi.Loaded{Name: name, Version: f.Version}, nil
}

func (n *node) Unload(context.Context, runnerapi.Runner, string) error { return nil }

func (n *node) FollowLogs(ctx context.Context, _ runnerapi.Runner, after int64, _ time.Duration, _ func(runnerapi.LogBatch) error) (int64, error) {
	<-ctx.Done()
	return after, ctx.Err()
}

// poolCalls is the pool as the table sees it, noting the calls made within a resolve.
type poolCalls struct {
	p *pool.Pool
	n *node
}

func (c poolCalls) Take(ctx context.Context) (pool.Runner, error) {
	c.n.record("pool take")
	return c.p.Take(ctx)
}

func (c poolCalls) End(jobID string, reason pool.EndReason, detail string) {
	c.n.record("pool end")
	c.p.End(jobID, reason, detail)
}

func (c poolCalls) WaitRecovered(ctx context.Context) error {
	c.n.record("pool wait recovered")
	return c.p.WaitRecovered(ctx)
}

func (c poolCalls) Degraded() string {
	c.n.record("pool degraded")
	return c.p.Degraded()
}

// owner passes the pool's Owner calls to the table, noting those made within a resolve.
type owner struct {
	*Table
	n *node
}

func (o owner) Adopt(r pool.Runner, st runnerapi.State) bool {
	if path, in := stackPath(); in {
		o.n.mu.Lock()
		o.n.bounced = append(o.n.bounced, "Adopt: "+path)
		o.n.mu.Unlock()
	}
	return o.Table.Adopt(r, st)
}

func (o owner) Lost(jobID string, reason pool.EndReason) {
	if path, in := stackPath(); in {
		o.n.mu.Lock()
		o.n.bounced = append(o.n.bounced, "Lost: "+path)
		o.n.mu.Unlock()
	}
	o.Table.Lost(jobID, reason)
}

func TestResolveCrossesTheTableOnce(t *testing.T) {
	n := &node{runners: map[string]*fakeRunner{}, paths: map[string]int{}}
	log := slog.New(slog.DiscardHandler)
	p := pool.New(pool.Config{Secret: "secret-secret-secret", MaxRunners: 2, MinIdle: 1, HealthInterval: time.Hour}, n, n, log, nil)
	n.p = p
	s := &fakeStore{fns: map[string]fnhook.Function{}}
	tb := New(Config{AssignWait: 5 * time.Second}, s, fakeModules{}, poolCalls{p, n}, n, log, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { p.Run(ctx, owner{tb, n}) })
	wg.Go(func() { tb.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()

	// Cold resolves, the third one on a full node (it evicts), a warm one, a refresh.
	for _, tn := range []string{"a", "b", "c"} {
		s.put(fnhook.Function{Tenant: tn, Name: "fn", Version: 1, Code: "ok"})
	}
	for _, step := range []struct {
		tenant  string
		refresh bool
		wait    time.Duration
	}{{"a", false, 0}, {"b", false, 0}, {"c", false, callSlack + 100*time.Millisecond}, {"c", false, 0}, {"c", true, 0}} {
		time.Sleep(step.wait) // c evicts a or b once their routes' calls have had time to arrive
		if _, err := tb.Resolve(context.Background(), step.tenant, "fn", step.refresh); err != nil {
			t.Fatalf("resolve %s: %v", step.tenant, err)
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	want := map[string]bool{
		"pool take: tenants": true, "pool end: tenants": true, "pool wait recovered: tenants": true, "pool degraded: tenants": true,
		"runner assign: tenants": true, "runner load: tenants": true, "runner state: tenants": true,
	}
	for path, count := range n.paths {
		t.Logf("%s (%d)", path, count)
		if !want[path] {
			t.Errorf("a resolve made the call %q: a table frame below a pool frame, or a call from the pool", path)
		}
	}
	if len(n.paths) != len(want) {
		t.Errorf("calls within resolves: %v, want each of %v", n.paths, want)
	}
	if len(n.bounced) > 0 {
		t.Errorf("the pool called the table back within a resolve: %v", n.bounced)
	}
	if ev := testutil.ToFloat64(tb.m.evictions); ev != 1 {
		t.Errorf("%v evictions, want the third tenant's", ev)
	}
}
