package pool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	fnhook "github.com/fnhook/fnhook/libs"
	"github.com/fnhook/fnhook/libs/runnerapi"
	"github.com/fnhook/fnhook/libs/server"
	"github.com/fnhook/fnhook/services/handler/runnerjob"
)

func TestToStart(t *testing.T) {
	tests := []struct {
		name                                            string
		idle, starting, assigned, waiters, minIdle, max int
		want                                            int
	}{
		{"empty pool fills to minIdle", 0, 0, 0, 0, 2, 16, 2},
		{"starting ones count", 0, 1, 0, 0, 2, 16, 1},
		{"full pool starts nothing", 2, 0, 5, 0, 2, 16, 0},
		{"over minIdle starts nothing", 3, 1, 0, 0, 2, 16, 0},
		{"waiters ask for more", 0, 2, 0, 3, 2, 16, 3},
		{"bounded by maxRunners", 0, 0, 15, 0, 2, 16, 1},
		{"at maxRunners nothing", 0, 0, 16, 4, 2, 16, 0},
		{"minIdle zero still serves waiters", 0, 0, 0, 1, 0, 16, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := toStart(tt.idle, tt.starting, tt.assigned, tt.waiters, tt.minIdle, tt.max); got != tt.want {
				t.Fatalf("toStart = %d, want %d", got, tt.want)
			}
		})
	}
}

// fakeRunner is a runner as the fake runner API sees it; its address is its job id.
type fakeRunner struct {
	healthy   bool
	tenant    string
	functions map[string]int
	idleMs    *int64
	assignErr error
}

type fakes struct {
	mu       sync.Mutex
	seq      int
	runners  map[string]*fakeRunner // by address (= job id)
	stopped  []string
	pool     *Pool
	place    bool   // place a registered job at once (send its allocation)
	fail     bool   // its allocation fails at once instead
	failure  string // what Nomad says of the failed allocation (runnerjob.Alloc.Failure)
	regs     int
	regErr   error // Register fails
	assigned []string
}

func newFakes() *fakes { return &fakes{runners: map[string]*fakeRunner{}, place: true} }

func (f *fakes) NewJobID() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	return fmt.Sprintf("job-%02d", f.seq)
}

func (f *fakes) Register(_ context.Context, jobID, token string) error {
	f.mu.Lock()
	if f.regErr != nil {
		f.mu.Unlock()
		return f.regErr
	}
	if token != runnerapi.Token("secret-secret-secret", jobID) {
		f.mu.Unlock()
		return errors.New("wrong token")
	}
	f.runners[jobID] = &fakeRunner{healthy: true, functions: map[string]int{}}
	f.regs++
	place, fail, failure := f.place, f.fail, f.failure
	f.mu.Unlock()
	if fail {
		go f.pool.Observe(jobID, runnerjob.Alloc{ID: "alloc-" + jobID, ClientStatus: "failed", Terminal: true, Failure: failure})
		return nil
	}
	if place {
		go f.pool.Observe(jobID, runnerjob.Alloc{ID: "alloc-" + jobID, Address: jobID, ClientStatus: "pending"})
	}
	return nil
}

func (f *fakes) Deregister(_ context.Context, jobID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopped = append(f.stopped, jobID)
	delete(f.runners, jobID)
	return nil
}

func (f *fakes) Alloc(_ context.Context, jobID string) (*runnerjob.Alloc, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.runners[jobID]; !ok {
		return nil, nil
	}
	return &runnerjob.Alloc{ID: "alloc-" + jobID, Address: jobID, ClientStatus: "running"}, nil
}

func (f *fakes) Health(_ context.Context, address string) (runnerapi.Health, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.runners[address]
	if r == nil || !r.healthy {
		return runnerapi.Health{}, errors.New("connection refused")
	}
	if r.tenant != "" {
		return runnerapi.Health{State: runnerapi.StateAssigned}, nil
	}
	return runnerapi.Health{State: runnerapi.StateIdle}, nil
}

func (f *fakes) State(_ context.Context, rr runnerapi.Runner) (runnerapi.State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.runners[rr.Address]
	if r == nil || !r.healthy {
		return runnerapi.State{}, errors.New("connection refused")
	}
	if rr.Token != runnerapi.Token("secret-secret-secret", rr.Address) {
		return runnerapi.State{}, &fnhook.Error{Code: "unauthorized", Status: 401}
	}
	fns := map[string]int{}
	for k, v := range r.functions {
		fns[k] = v
	}
	return runnerapi.State{Tenant: r.tenant, Functions: fns, IdleMs: r.idleMs}, nil
}

func (f *fakes) Assign(_ context.Context, rr runnerapi.Runner, tenant string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.runners[rr.Address]
	if r == nil || !r.healthy {
		return errors.New("connection refused")
	}
	if r.assignErr != nil {
		return r.assignErr
	}
	if r.tenant != "" {
		return &fnhook.Error{Code: runnerapi.CodeAlreadyAssigned, Status: 409}
	}
	r.tenant = tenant
	f.assigned = append(f.assigned, rr.Address)
	return nil
}

func (f *fakes) runner(id string) *fakeRunner {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.runners[id]
}

func (f *fakes) wasStopped(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.stopped {
		if s == id {
			return true
		}
	}
	return false
}

func testPool(t *testing.T, cfg Config, f *fakes) *Pool {
	t.Helper()
	return testPoolWith(t, cfg, f, slog.New(slog.DiscardHandler), nil)
}

// testPoolWith is testPool with a logger and a registry for the pool's metrics.
func testPoolWith(t *testing.T, cfg Config, f *fakes, log *slog.Logger, reg prometheus.Registerer) *Pool {
	t.Helper()
	cfg.Secret = "secret-secret-secret"
	if cfg.HealthInterval == 0 {
		cfg.HealthInterval = time.Hour // tests call checkHealth themselves
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = time.Hour
	}
	p := New(cfg, f, f, log, reg)
	f.pool = p
	return p
}

func run(t *testing.T, p *Pool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func idleCount(p *Pool) int { _, i, _ := p.Counts(); return i }

func TestPoolFillsAndAssigns(t *testing.T) {
	f := newFakes()
	p := testPool(t, Config{MinIdle: 2, MaxRunners: 4}, f)
	run(t, p)
	eventually(t, "2 idle runners", func() bool { return idleCount(p) == 2 })

	ctx := context.Background()
	a, fresh, err := p.Acquire(ctx, "acme")
	if err != nil || !fresh {
		t.Fatalf("Acquire(acme) = %v, fresh=%v", err, fresh)
	}
	if f.runner(a.JobID).tenant != "acme" {
		t.Fatalf("runner %s not assigned to acme on the runner side", a.JobID)
	}
	again, fresh, err := p.Acquire(ctx, "acme")
	if err != nil || fresh || again.JobID != a.JobID {
		t.Fatalf("second Acquire(acme) = %+v fresh=%v err=%v, want the same runner", again, fresh, err)
	}
	// The pool refills to 2 idle beside the assigned one.
	eventually(t, "refill to 2 idle", func() bool { return idleCount(p) == 2 })
	if _, _, as := p.Counts(); as != 1 {
		t.Fatalf("%d assigned, want 1", as)
	}
	if r, ok := p.Lookup("acme"); !ok || r.Token != runnerapi.Token("secret-secret-secret", a.JobID) {
		t.Fatalf("Lookup(acme) = %+v, %v", r, ok)
	}
}

func TestAcquireNoCapacity(t *testing.T) {
	f := newFakes()
	p := testPool(t, Config{MinIdle: 1, MaxRunners: 2, AssignWait: 200 * time.Millisecond}, f)
	run(t, p)
	ctx := context.Background()
	for _, tenant := range []string{"a", "b"} {
		if _, _, err := p.Acquire(ctx, tenant); err != nil {
			t.Fatalf("Acquire(%s): %v", tenant, err)
		}
	}
	start := time.Now()
	_, _, err := p.Acquire(ctx, "c")
	if fnhook.ErrorCode(err) != "no_capacity" || fnhook.StatusOf(err) != 503 {
		t.Fatalf("Acquire(c) = %v, want no_capacity 503", err)
	}
	if time.Since(start) > 150*time.Millisecond {
		t.Fatalf("a full node waited %s; nothing can free up by waiting", time.Since(start))
	}
	// Ending a tenant frees room: c gets a fresh runner.
	if !p.EndTenant("a", "tenant deleted") {
		t.Fatal("EndTenant(a) found no runner")
	}
	p.cfg.AssignWait = 5 * time.Second
	if _, _, err := p.Acquire(ctx, "c"); err != nil {
		t.Fatalf("Acquire(c) after a freed slot: %v", err)
	}
}

func TestAcquireWaitsForStartingRunner(t *testing.T) {
	f := newFakes()
	f.place = false // runners get no allocation until the test says so
	p := testPool(t, Config{MinIdle: 1, MaxRunners: 4, AssignWait: 5 * time.Second}, f)
	run(t, p)
	eventually(t, "a registered runner", func() bool { return f.runner("job-01") != nil })
	got := make(chan error, 1)
	go func() {
		_, _, err := p.Acquire(context.Background(), "acme")
		got <- err
	}()
	time.Sleep(50 * time.Millisecond)
	select {
	case err := <-got:
		t.Fatalf("Acquire returned before any runner was ready: %v", err)
	default:
	}
	p.Observe("job-01", runnerjob.Alloc{ID: "alloc-job-01", Address: "job-01"})
	if err := <-got; err != nil {
		t.Fatalf("Acquire: %v", err)
	}
}

func TestAssignFailureEndsRunner(t *testing.T) {
	f := newFakes()
	p := testPool(t, Config{MinIdle: 2, MaxRunners: 4}, f)
	run(t, p)
	eventually(t, "2 idle runners", func() bool { return idleCount(p) == 2 })
	bad := p.IdleJobs()[0]
	f.mu.Lock()
	f.runners[bad].assignErr = errors.New("connection reset")
	f.mu.Unlock()
	r, _, err := p.Acquire(context.Background(), "acme")
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if r.JobID == bad {
		t.Fatal("got the runner whose assign failed")
	}
	eventually(t, "the runner whose assign failed stopped", func() bool { return f.wasStopped(bad) })
}

func TestRecover(t *testing.T) {
	f := newFakes()
	p := testPool(t, Config{MinIdle: 1, MaxRunners: 8}, f)
	f.runners = map[string]*fakeRunner{
		"idle-1":   {healthy: true, functions: map[string]int{}},
		"acme-1":   {healthy: true, tenant: "acme", functions: map[string]int{"hello": 3}},
		"acme-2":   {healthy: true, tenant: "acme", functions: map[string]int{}},
		"orphan-1": {healthy: true, functions: map[string]int{"x": 1}},
	}
	jobs := []runnerjob.Job{
		{ID: "idle-1", Alloc: &runnerjob.Alloc{ID: "a1", Address: "idle-1"}},
		{ID: "acme-1", Alloc: &runnerjob.Alloc{ID: "a2", Address: "acme-1"}},
		{ID: "acme-2", Alloc: &runnerjob.Alloc{ID: "a3", Address: "acme-2"}},
		{ID: "orphan-1", Alloc: &runnerjob.Alloc{ID: "a4", Address: "orphan-1"}},
		{ID: "stopped-1", Alloc: &runnerjob.Alloc{ID: "a5", Terminal: true}},
		{ID: "dead-1", Dead: true},
	}
	p.Recover(jobs)
	run(t, p)
	eventually(t, "recovered tenant", func() bool { _, ok := p.Lookup("acme"); return ok })
	eventually(t, "orphan, stopped and dead ones ended", func() bool {
		return f.wasStopped("orphan-1") && f.wasStopped("stopped-1") && f.wasStopped("dead-1")
	})
	r, v, ok := p.Loaded("acme", "hello")
	if !ok || (r.JobID != "acme-1" && r.JobID != "acme-2") {
		t.Fatalf("Loaded(acme) = %+v, %v", r, ok)
	}
	if r.JobID == "acme-1" && v != 3 {
		t.Fatalf("recovered version %d, want 3", v)
	}
	// Exactly one of the two runners claiming acme survives.
	eventually(t, "one acme runner ended", func() bool { return f.wasStopped("acme-1") != f.wasStopped("acme-2") })
	if f.wasStopped("idle-1") {
		t.Fatal("an idle recovered runner was stopped")
	}
	eventually(t, "idle-1 back in the pool", func() bool {
		for _, id := range p.IdleJobs() {
			if id == "idle-1" {
				return true
			}
		}
		return false
	})
}

func TestHealthEndsRunner(t *testing.T) {
	f := newFakes()
	p := testPool(t, Config{MinIdle: 1, MaxRunners: 4, HealthFailures: 2}, f)
	run(t, p)
	eventually(t, "1 idle", func() bool { return idleCount(p) == 1 })
	r, _, err := p.Acquire(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.runners[r.JobID].healthy = false
	f.mu.Unlock()
	ctx := context.Background()
	p.checkHealth(ctx)
	if _, ok := p.Lookup("acme"); !ok {
		t.Fatal("one failed check ended the runner; want HealthFailures in a row")
	}
	p.checkHealth(ctx)
	if _, ok := p.Lookup("acme"); ok {
		t.Fatal("runner still assigned after failing its health twice")
	}
	eventually(t, "unhealthy runner's job stopped", func() bool { return f.wasStopped(r.JobID) })
}

func TestIdleRunnerAssignedBehindOurBack(t *testing.T) {
	f := newFakes()
	p := testPool(t, Config{MinIdle: 1, MaxRunners: 4}, f)
	run(t, p)
	eventually(t, "1 idle", func() bool { return idleCount(p) == 1 })
	id := p.IdleJobs()[0]
	f.mu.Lock()
	f.runners[id].tenant = "intruder"
	f.mu.Unlock()
	p.checkHealth(context.Background())
	for _, j := range p.IdleJobs() {
		if j == id {
			t.Fatal("an idle runner that reports assigned was kept in the pool")
		}
	}
	eventually(t, "its job stopped", func() bool { return f.wasStopped(id) })
}

func TestReapIdle(t *testing.T) {
	ms := func(v int64) *int64 { return &v }
	tests := []struct {
		name   string
		idleMs *int64
		ended  bool
	}{
		{"runner does not report its idle time: last resolve decides", nil, true},
		{"runner was called recently", ms(1000), false},
		{"runner idle as long as the handler thinks", ms(3_600_000), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakes()
			p := testPool(t, Config{MinIdle: 1, MaxRunners: 4, IdleTimeout: time.Minute}, f)
			run(t, p)
			eventually(t, "1 idle", func() bool { return idleCount(p) == 1 })
			r, _, err := p.Acquire(context.Background(), "acme")
			if err != nil {
				t.Fatal(err)
			}
			f.mu.Lock()
			f.runners[r.JobID].idleMs = tt.idleMs
			f.mu.Unlock()
			p.mu.Lock()
			p.now = func() time.Time { return time.Now().Add(2 * time.Minute) }
			p.mu.Unlock()
			p.reapIdle(context.Background())
			if _, still := p.Lookup("acme"); still == tt.ended {
				t.Fatalf("runner kept=%v, want ended=%v", still, tt.ended)
			}
			if tt.ended {
				eventually(t, "idle runner's job stopped", func() bool { return f.wasStopped(r.JobID) })
			} else if f.wasStopped(r.JobID) {
				t.Fatal("a recently called runner was stopped")
			}
		})
	}
}

func TestTerminalAllocEndsRunner(t *testing.T) {
	f := newFakes()
	p := testPool(t, Config{MinIdle: 1, MaxRunners: 4}, f)
	run(t, p)
	eventually(t, "1 idle", func() bool { return idleCount(p) == 1 })
	r, _, err := p.Acquire(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	p.Observe(r.JobID, runnerjob.Alloc{ID: "some-other-alloc", ClientStatus: "failed", Terminal: true})
	if _, ok := p.Lookup("acme"); !ok {
		t.Fatal("an event for another allocation ended the runner")
	}
	p.Observe(r.JobID, runnerjob.Alloc{ID: "alloc-" + r.JobID, ClientStatus: "failed", Terminal: true})
	if _, ok := p.Lookup("acme"); ok {
		t.Fatal("runner kept after its allocation failed")
	}
	eventually(t, "job stopped", func() bool { return f.wasStopped(r.JobID) })
}

func TestRegisterFailureBacksOff(t *testing.T) {
	f := newFakes()
	f.regErr = errors.New("nomad down")
	p := testPool(t, Config{MinIdle: 2, MaxRunners: 4, AssignWait: 300 * time.Millisecond}, f)
	run(t, p)
	_, _, err := p.Acquire(context.Background(), "acme")
	if fnhook.ErrorCode(err) != "no_capacity" {
		t.Fatalf("Acquire with Nomad down = %v, want no_capacity", err)
	}
	if s, i, a := p.Counts(); s+i+a != 0 {
		t.Fatalf("failed registrations left %d/%d/%d runners", s, i, a)
	}
	f.mu.Lock()
	f.regErr = nil
	f.mu.Unlock()
	eventually(t, "pool refilled after Nomad came back", func() bool { return idleCount(p) == 2 })
}

func TestRunnersFailingAtStartBackOff(t *testing.T) {
	f := newFakes()
	f.fail = true
	p := testPool(t, Config{MinIdle: 2, MaxRunners: 4}, f)
	run(t, p)
	time.Sleep(1500 * time.Millisecond)
	f.mu.Lock()
	regs := f.regs
	f.mu.Unlock()
	// Without backoff the pool would register replacements as fast as they fail.
	if regs > 8 {
		t.Fatalf("%d registrations in 1.5 s of runners failing at start", regs)
	}
	if regs < 2 {
		t.Fatalf("%d registrations, want the pool to keep trying", regs)
	}
	f.mu.Lock()
	f.fail = false
	f.mu.Unlock()
	eventually(t, "pool filled once runners start", func() bool { return idleCount(p) == 2 })
}

func TestAcquireWaitsForRecovery(t *testing.T) {
	f := newFakes()
	p := testPool(t, Config{MinIdle: 1, MaxRunners: 4}, f)
	f.runners["acme-1"] = &fakeRunner{healthy: false, tenant: "acme", functions: map[string]int{"fn": 2}}
	p.Recover([]runnerjob.Job{{ID: "acme-1", Alloc: &runnerjob.Alloc{ID: "a1", Address: "acme-1"}}})
	run(t, p)
	if p.Ready() == nil {
		t.Fatal("pool ready while a recovered runner has not answered")
	}
	type res struct {
		r     Runner
		fresh bool
		err   error
	}
	got := make(chan res, 1)
	go func() {
		r, fresh, err := p.Acquire(context.Background(), "acme")
		got <- res{r, fresh, err}
	}()
	time.Sleep(200 * time.Millisecond)
	select {
	case r := <-got:
		t.Fatalf("Acquire answered %+v before the recovered runner was asked", r)
	default:
	}
	f.mu.Lock()
	f.runners["acme-1"].healthy = true
	f.mu.Unlock()
	r := <-got
	if r.err != nil || r.fresh || r.r.JobID != "acme-1" {
		t.Fatalf("Acquire = %+v, want the recovered runner", r)
	}
	if _, v, _ := p.Loaded("acme", "fn"); v != 2 {
		t.Fatalf("recovered version %d, want 2", v)
	}
	eventually(t, "pool ready", func() bool { return p.Ready() == nil })
}

// denied is the driver failure that runners met on a node whose Node.js the task user
// could not execute.
const denied = `Driver Failure: failed to launch command with executor: exec: "/usr/bin/node": stat /usr/bin/node: permission denied`

func TestStartFailuresDegradePool(t *testing.T) {
	f := newFakes()
	f.fail, f.failure = true, denied
	var logs syncBuffer
	reg := prometheus.NewRegistry()
	p := testPoolWith(t, Config{MinIdle: 3, MaxRunners: 4}, f, slog.New(slog.NewJSONHandler(&logs, nil)), reg)
	run(t, p)

	want := `{"status":"degraded","reason":"no runner could start: allocation failed: ` + jsonString(denied) + `"}`
	eventually(t, "degraded /healthz", func() bool { _, body := healthz(p); return body == want })
	if code, body := healthz(p); code != http.StatusOK {
		t.Fatalf("/healthz of a degraded pool = %d %s, want 200 so Consul keeps routing to it", code, body)
	}
	if v := metricValue(t, reg, "fnhook_handler_pool_degraded", nil); v != 1 {
		t.Fatalf("fnhook_handler_pool_degraded = %v, want 1", v)
	}
	if v := metricValue(t, reg, "fnhook_handler_pool_failed_starts", nil); v < degradedAfter {
		t.Fatalf("fnhook_handler_pool_failed_starts = %v, want at least %d", v, degradedAfter)
	}
	if v := metricValue(t, reg, "fnhook_handler_runner_ends_total", map[string]string{"reason": "allocation"}); v < degradedAfter {
		t.Fatalf(`fnhook_handler_runner_ends_total{reason="allocation"} = %v, want at least %d`, v, degradedAfter)
	}
	if line := `"reason":"allocation failed: ` + jsonString(denied) + `"`; !strings.Contains(logs.String(), line) {
		t.Fatalf("no log line with %s in:\n%s", line, logs.String())
	}

	// Runners start again: the first one that answers ends the degraded state.
	f.mu.Lock()
	f.fail = false
	f.mu.Unlock()
	eventually(t, "an idle runner", func() bool { return idleCount(p) > 0 })
	if code, body := healthz(p); code != http.StatusOK || body != `{"status":"ok"}` {
		t.Fatalf("/healthz once a runner started = %d %s, want 200 ok", code, body)
	}
	if v := metricValue(t, reg, "fnhook_handler_pool_degraded", nil); v != 0 {
		t.Fatalf("fnhook_handler_pool_degraded = %v once a runner started, want 0", v)
	}
	if v := metricValue(t, reg, "fnhook_handler_pool_failed_starts", nil); v != 0 {
		t.Fatalf("fnhook_handler_pool_failed_starts = %v once a runner started, want 0", v)
	}
}

func TestIdleRunnerKeepsPoolNotDegraded(t *testing.T) {
	f := newFakes()
	f.fail, f.failure = true, denied
	reg := prometheus.NewRegistry()
	p := testPoolWith(t, Config{MinIdle: 4, MaxRunners: 4}, f, slog.New(slog.DiscardHandler), reg)
	f.runners["idle-1"] = &fakeRunner{healthy: true, functions: map[string]int{}}
	p.Recover([]runnerjob.Job{{ID: "idle-1", Alloc: &runnerjob.Alloc{ID: "a1", Address: "idle-1"}}})
	run(t, p)
	eventually(t, "new runners failed and the recovered one idle", func() bool {
		return metricValue(t, reg, "fnhook_handler_pool_failed_starts", nil) >= degradedAfter && idleCount(p) == 1
	})
	if code, body := healthz(p); code != http.StatusOK || body != `{"status":"ok"}` {
		t.Fatalf("/healthz with an idle runner left = %d %s, want 200 ok: a new tenant still gets a runner", code, body)
	}
	if _, _, err := p.Acquire(context.Background(), "acme"); err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if _, body := healthz(p); !strings.HasPrefix(body, `{"status":"degraded","reason":"no runner could start: allocation failed: Driver Failure:`) {
		t.Fatalf("/healthz once the last idle runner is taken = %s, want degraded", body)
	}
}

// healthz answers GET /healthz of a server wired to the pool as the handler wires it.
func healthz(p *Pool) (int, string) {
	s := server.New("handler", slog.New(slog.DiscardHandler))
	s.Ready = func(context.Context) error { return p.Ready() }
	s.Degraded = p.Degraded
	rec := httptest.NewRecorder()
	s.Echo.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	return rec.Code, strings.TrimSpace(rec.Body.String())
}

// jsonString is s as encoding/json writes it inside quotes.
func jsonString(s string) string {
	return strings.ReplaceAll(s, `"`, `\"`)
}

// metricValue returns the value of the gauge or counter name whose labels include labels.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if v, ok := labels[l.GetName()]; ok && v != l.GetValue() {
					continue metrics
				}
			}
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s%v", name, labels)
	return 0
}

// syncBuffer is a log destination the pool's goroutines may write to while a test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
