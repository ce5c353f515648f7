package pool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
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
		name                                           string
		idle, starting, taken, waiters, target, maxRun int
		want                                           int
	}{
		{"empty pool fills to the target", 0, 0, 0, 0, 2, 16, 2},
		{"starting ones count", 0, 1, 0, 0, 2, 16, 1},
		{"full pool starts nothing", 2, 0, 5, 0, 2, 16, 0},
		{"over the target starts nothing", 3, 1, 0, 0, 2, 16, 0},
		{"waiters ask for more", 0, 2, 0, 3, 2, 16, 3},
		{"bounded by maxRunners", 0, 0, 15, 0, 2, 16, 1},
		{"at maxRunners nothing", 0, 0, 16, 4, 2, 16, 0},
		{"a zero target still serves waiters", 0, 0, 0, 1, 0, 16, 1},
		{"a raised target starts more", 1, 0, 3, 0, 6, 64, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := toStart(tt.idle, tt.starting, tt.taken, tt.waiters, tt.target, tt.maxRun); got != tt.want {
				t.Fatalf("toStart = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestIdleTarget(t *testing.T) {
	tests := []struct {
		name            string
		minIdle, maxRun int
		recent          float64
		want            int
	}{
		{"quiet: minIdle", 2, 64, 0, 2},
		{"a few new tenants a minute: still minIdle", 2, 64, 6, 2},
		{"12 in the last minute: 3", 2, 64, 12, 3},
		{"a burst of 40: 10", 2, 64, 40, 10},
		{"bounded by a quarter of the capacity", 2, 16, 40, 4},
		{"never below minIdle", 6, 8, 40, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := idleTarget(tt.minIdle, tt.maxRun, tt.recent); got != tt.want {
				t.Fatalf("idleTarget(%d, %d, %v) = %d, want %d", tt.minIdle, tt.maxRun, tt.recent, got, tt.want)
			}
		})
	}
}

func TestDemandDecays(t *testing.T) {
	d := demand{tau: time.Minute}
	t0 := time.Unix(1000, 0)
	for range 40 {
		d.add(t0)
	}
	if v := d.value(t0); v != 40 {
		t.Fatalf("after 40 takes: %v", v)
	}
	if v := d.value(t0.Add(time.Minute)); math.Abs(v-40/math.E) > 1e-9 {
		t.Fatalf("a minute later: %v, want 40/e", v)
	}
	if v := d.value(t0.Add(5 * time.Minute)); v > 0.3 {
		t.Fatalf("five minutes later: %v, want about 0", v)
	}
}

func TestCapacity(t *testing.T) {
	type res = runnerjob.Resources
	// This machine: 24105 MB, 2 cores of 2596 MHz, 258019 MB of disk.
	node := res{MemoryMB: 24105, CPUMHz: 5192, DiskMB: 258019}
	headroom := res{MemoryMB: 2560, CPUMHz: 1000, DiskMB: 4096}
	tests := []struct {
		name      string
		node, per res
		want      int
		bound     string
	}{
		{"runners reserve what they use: memory bounds", node, res{MemoryMB: 64, CPUMHz: 10, DiskMB: 150}, 336, "memory"},
		{"runners reserve their whole limit", node, res{MemoryMB: 256, CPUMHz: 10, DiskMB: 150}, 84, "memory"},
		{"a CPU reservation that binds first", node, res{MemoryMB: 64, CPUMHz: 100, DiskMB: 150}, 41, "cpu"},
		{"a huge node is capped", res{MemoryMB: 1 << 20, CPUMHz: 1 << 20, DiskMB: 1 << 30}, res{MemoryMB: 64, CPUMHz: 10, DiskMB: 150}, CapacityCap, "cap"},
		{"a node smaller than the headroom holds none", res{MemoryMB: 2000, CPUMHz: 5192, DiskMB: 1 << 20}, res{MemoryMB: 64, CPUMHz: 10, DiskMB: 150}, 0, "memory"},
		{"a dimension a runner does not reserve is no bound", node, res{MemoryMB: 64}, 336, "memory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, bound := Capacity(tt.node, headroom, tt.per)
			if n != tt.want || bound != tt.bound {
				t.Fatalf("Capacity = %d (%s), want %d (%s)", n, bound, tt.want, tt.bound)
			}
		})
	}
}

func TestEndReasonLabels(t *testing.T) {
	seen := map[string]EndReason{}
	for r := EndIdle; r <= EndSurplus; r++ {
		label := r.String()
		if label == "unknown" || label == "" {
			t.Fatalf("EndReason %d has no label", r)
		}
		if other, dup := seen[label]; dup {
			t.Fatalf("EndReasons %d and %d share the label %q", r, other, label)
		}
		seen[label] = r
	}
	if EndReason(0).String() != "unknown" {
		t.Fatal("the zero EndReason has a label")
	}
}

// fakeRunner is a runner as the fake runner API sees it; its address is its job id.
type fakeRunner struct {
	healthy   bool
	tenant    string
	functions map[string]int
}

type fakes struct {
	mu      sync.Mutex
	seq     int
	runners map[string]*fakeRunner // by address (= job id)
	stopped []string
	pool    *Pool
	lost    map[string]EndReason // what the owner heard
	adopted []string
	refuse  map[string]bool // tenants the owner already has
	place   bool            // place a registered job at once (send its allocation)
	fail    bool            // its allocation fails at once instead
	failure string          // what Nomad says of the failed allocation (runnerjob.Alloc.Failure)
	regs    int
	regErr  error // Register fails
}

func newFakes() *fakes {
	return &fakes{runners: map[string]*fakeRunner{}, place: true, lost: map[string]EndReason{}, refuse: map[string]bool{}}
}

// Adopt and Lost make the fakes the pool's Owner: the first runner of a tenant is
// adopted, a second one refused.
func (f *fakes) Adopt(r Runner, st runnerapi.State) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refuse[st.Tenant] {
		return false
	}
	f.refuse[st.Tenant] = true
	f.adopted = append(f.adopted, r.JobID)
	return true
}

func (f *fakes) Lost(jobID string, reason EndReason) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lost[jobID] = reason
}

func (f *fakes) lostReason(jobID string) (EndReason, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.lost[jobID]
	return r, ok
}

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
	return runnerapi.State{Tenant: r.tenant, Functions: fns}, nil
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
	p := New(cfg, f, f, log, reg)
	f.pool = p
	return p
}

// run runs the pool with the fakes as its Owner until the test ends.
func run(t *testing.T, p *Pool, f *fakes) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx, f); close(done) }()
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

func isIdle(p *Pool, id string) bool {
	for _, j := range p.IdleJobs() {
		if j == id {
			return true
		}
	}
	return false
}

func take(t *testing.T, p *Pool) Runner {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := p.Take(ctx)
	if err != nil {
		t.Fatalf("Take: %v", err)
	}
	return r
}

func TestPoolFillsAndTakes(t *testing.T) {
	f := newFakes()
	p := testPool(t, Config{MinIdle: 2, MaxRunners: 4}, f)
	run(t, p, f)
	eventually(t, "2 idle runners", func() bool { return idleCount(p) == 2 })
	a := take(t, p)
	if a.Token != runnerapi.Token("secret-secret-secret", a.JobID) || a.Address != a.JobID {
		t.Fatalf("taken runner %+v, want its address and token", a)
	}
	if isIdle(p, a.JobID) {
		t.Fatal("a taken runner is still idle")
	}
	// The pool refills to 2 idle beside the taken one.
	eventually(t, "refill to 2 idle", func() bool { return idleCount(p) == 2 })
	if s, i, tk := p.Counts(); tk != 1 || s+i+tk > 4 {
		t.Fatalf("counts %d/%d/%d, want 1 taken within 4", s, i, tk)
	}
	b := take(t, p)
	if b.JobID == a.JobID {
		t.Fatal("one runner taken twice")
	}
}

func TestTakeFullFailsAtOnce(t *testing.T) {
	f := newFakes()
	p := testPool(t, Config{MinIdle: 1, MaxRunners: 2}, f)
	run(t, p, f)
	a, _ := take(t, p), take(t, p)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := p.Take(ctx); !errors.Is(err, ErrFull) {
		t.Fatalf("Take on a full node = %v, want ErrFull", err)
	}
	if time.Since(start) > 100*time.Millisecond {
		t.Fatalf("a full node waited %s; nothing frees up by waiting", time.Since(start))
	}
	// Ending a taken runner makes room: the next Take gets a fresh runner.
	p.End(a.JobID, EndEvicted, "for the test")
	eventually(t, "its job stopped", func() bool { return f.wasStopped(a.JobID) })
	if c := take(t, p); c.JobID == a.JobID {
		t.Fatal("an ended runner came back")
	}
}

func TestTakeWaitsForStartingRunner(t *testing.T) {
	f := newFakes()
	f.place = false // runners get no allocation until the test says so
	p := testPool(t, Config{MinIdle: 1, MaxRunners: 4}, f)
	run(t, p, f)
	eventually(t, "a registered runner", func() bool { return f.runner("job-01") != nil })
	got := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := p.Take(ctx)
		got <- err
	}()
	time.Sleep(50 * time.Millisecond)
	select {
	case err := <-got:
		t.Fatalf("Take returned before any runner was ready: %v", err)
	default:
	}
	p.Observe("job-01", runnerjob.Alloc{ID: "alloc-job-01", Address: "job-01"})
	if err := <-got; err != nil {
		t.Fatalf("Take: %v", err)
	}
}

func TestTakeWaiterBeyondSupplyIsFull(t *testing.T) {
	f := newFakes()
	f.place = false
	p := testPool(t, Config{MinIdle: 0, MaxRunners: 2}, f)
	run(t, p, f)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	results := make(chan error, 2)
	for range 2 {
		go func() { _, err := p.Take(ctx); results <- err }()
	}
	eventually(t, "2 runners starting for 2 waiters", func() bool { s, _, _ := p.Counts(); return s == 2 })
	// A third caller cannot be served by what is starting or by room: full, at once.
	if _, err := p.Take(ctx); !errors.Is(err, ErrFull) {
		t.Fatalf("third Take = %v, want ErrFull", err)
	}
	p.Observe("job-01", runnerjob.Alloc{ID: "alloc-job-01", Address: "job-01"})
	p.Observe("job-02", runnerjob.Alloc{ID: "alloc-job-02", Address: "job-02"})
	for range 2 {
		if err := <-results; err != nil {
			t.Fatalf("waiting Take: %v", err)
		}
	}
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
	run(t, p, f)
	if err := p.WaitRecovered(context.Background()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "orphan, stopped and dead ones ended", func() bool {
		return f.wasStopped("orphan-1") && f.wasStopped("stopped-1") && f.wasStopped("dead-1")
	})
	// The owner adopted exactly one of the two runners claiming acme; the other ended.
	f.mu.Lock()
	adopted := append([]string(nil), f.adopted...)
	f.mu.Unlock()
	if len(adopted) != 1 || (adopted[0] != "acme-1" && adopted[0] != "acme-2") {
		t.Fatalf("adopted %v, want one acme runner", adopted)
	}
	other := map[string]string{"acme-1": "acme-2", "acme-2": "acme-1"}[adopted[0]]
	eventually(t, "the second acme runner ended", func() bool { return f.wasStopped(other) })
	if f.wasStopped(adopted[0]) || f.wasStopped("idle-1") {
		t.Fatal("an adopted or idle recovered runner was stopped")
	}
	eventually(t, "idle-1 back in the pool", func() bool { return isIdle(p, "idle-1") })
	if _, _, tk := p.Counts(); tk != 1 {
		t.Fatalf("%d taken, want the adopted runner", tk)
	}
}

func TestHealthEndsTakenRunnerAndTellsOwner(t *testing.T) {
	f := newFakes()
	reg := prometheus.NewRegistry()
	p := testPoolWith(t, Config{MinIdle: 1, MaxRunners: 4, HealthFailures: 2}, f, slog.New(slog.DiscardHandler), reg)
	run(t, p, f)
	r := take(t, p)
	f.mu.Lock()
	f.runners[r.JobID].healthy = false
	f.mu.Unlock()
	ctx := context.Background()
	p.checkHealth(ctx)
	if _, lost := f.lostReason(r.JobID); lost {
		t.Fatal("one failed check ended the runner; want HealthFailures in a row")
	}
	p.checkHealth(ctx)
	if reason, lost := f.lostReason(r.JobID); !lost || reason != EndUnhealthy {
		t.Fatalf("owner heard %v (%v), want EndUnhealthy", reason, lost)
	}
	eventually(t, "unhealthy runner's job stopped", func() bool { return f.wasStopped(r.JobID) })
	if v := metricValue(t, reg, "fnhook_handler_runner_ends_total", map[string]string{"reason": "unhealthy"}); v != 1 {
		t.Fatalf(`ends_total{reason="unhealthy"} = %v, want 1`, v)
	}
}

func TestIdleRunnerAssignedBehindOurBack(t *testing.T) {
	f := newFakes()
	reg := prometheus.NewRegistry()
	p := testPoolWith(t, Config{MinIdle: 1, MaxRunners: 4}, f, slog.New(slog.DiscardHandler), reg)
	run(t, p, f)
	eventually(t, "1 idle", func() bool { return idleCount(p) == 1 })
	id := p.IdleJobs()[0]
	f.mu.Lock()
	f.runners[id].tenant = "intruder"
	f.mu.Unlock()
	p.checkHealth(context.Background())
	if isIdle(p, id) {
		t.Fatal("an idle runner that reports assigned was kept in the pool")
	}
	eventually(t, "its job stopped", func() bool { return f.wasStopped(id) })
	if v := metricValue(t, reg, "fnhook_handler_runner_ends_total", map[string]string{"reason": "foreign"}); v != 1 {
		t.Fatalf(`ends_total{reason="foreign"} = %v, want 1`, v)
	}
	if _, lost := f.lostReason(id); lost {
		t.Fatal("the owner heard of a runner it never had")
	}
}

func TestTerminalAllocEndsRunner(t *testing.T) {
	f := newFakes()
	p := testPool(t, Config{MinIdle: 1, MaxRunners: 4}, f)
	run(t, p, f)
	r := take(t, p)
	p.Observe(r.JobID, runnerjob.Alloc{ID: "some-other-alloc", ClientStatus: "failed", Terminal: true})
	if _, lost := f.lostReason(r.JobID); lost {
		t.Fatal("an event for another allocation ended the runner")
	}
	p.Observe(r.JobID, runnerjob.Alloc{ID: "alloc-" + r.JobID, ClientStatus: "failed", Terminal: true})
	if reason, lost := f.lostReason(r.JobID); !lost || reason != EndAllocation {
		t.Fatalf("owner heard %v (%v), want EndAllocation", reason, lost)
	}
	eventually(t, "job stopped", func() bool { return f.wasStopped(r.JobID) })
}

func TestEndCountsItsReason(t *testing.T) {
	f := newFakes()
	reg := prometheus.NewRegistry()
	p := testPoolWith(t, Config{MinIdle: 3, MaxRunners: 4}, f, slog.New(slog.DiscardHandler), reg)
	run(t, p, f)
	eventually(t, "3 idle", func() bool { return idleCount(p) == 3 })
	for _, reason := range []EndReason{EndIdle, EndEvicted, EndDeleted} {
		r := take(t, p)
		p.End(r.JobID, reason, "test")
		if v := metricValue(t, reg, "fnhook_handler_runner_ends_total", map[string]string{"reason": reason.String()}); v != 1 {
			t.Fatalf("ends_total{reason=%q} = %v, want 1", reason, v)
		}
		if _, lost := f.lostReason(r.JobID); lost {
			t.Fatal("the owner was told of an end it asked for")
		}
	}
}

func TestRegisterFailureBacksOff(t *testing.T) {
	f := newFakes()
	f.regErr = errors.New("nomad down")
	p := testPool(t, Config{MinIdle: 2, MaxRunners: 4}, f)
	run(t, p, f)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := p.Take(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Take with Nomad down = %v, want its deadline", err)
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
	run(t, p, f)
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

func TestTakeWaitsForRecovery(t *testing.T) {
	f := newFakes()
	p := testPool(t, Config{MinIdle: 1, MaxRunners: 4}, f)
	f.runners["acme-1"] = &fakeRunner{healthy: false, tenant: "acme", functions: map[string]int{"fn": 2}}
	p.Recover([]runnerjob.Job{{ID: "acme-1", Alloc: &runnerjob.Alloc{ID: "a1", Address: "acme-1"}}})
	run(t, p, f)
	if p.Ready() == nil {
		t.Fatal("pool ready while a recovered runner has not answered")
	}
	got := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := p.Take(ctx)
		got <- err
	}()
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-got:
		t.Fatalf("Take answered (%v) before the recovered runner was asked", err)
	default:
	}
	f.mu.Lock()
	f.runners["acme-1"].healthy = true
	f.mu.Unlock()
	if err := <-got; err != nil {
		t.Fatalf("Take after recovery: %v", err)
	}
	f.mu.Lock()
	adopted := append([]string(nil), f.adopted...)
	f.mu.Unlock()
	if len(adopted) != 1 || adopted[0] != "acme-1" {
		t.Fatalf("adopted %v, want acme-1 before any Take", adopted)
	}
	eventually(t, "pool ready", func() bool { return p.Ready() == nil })
}

func TestIdleTargetFollowsDemand(t *testing.T) {
	f := newFakes()
	p := testPool(t, Config{MinIdle: 1, MaxRunners: 40}, f)
	clock := time.Now()
	var cmu sync.Mutex
	p.mu.Lock()
	p.now = func() time.Time { cmu.Lock(); defer cmu.Unlock(); return clock }
	p.mu.Unlock()
	run(t, p, f)
	for range 12 {
		take(t, p)
	}
	if got := p.IdleTarget(); got != 3 {
		t.Fatalf("idle target after 12 new tenants = %d, want 3", got)
	}
	eventually(t, "3 idle runners kept ready", func() bool { return idleCount(p) == 3 })
	// Quiet for five minutes: the target falls back to MinIdle, and the runners started
	// for the burst end once idle for a while.
	cmu.Lock()
	clock = clock.Add(5 * time.Minute)
	cmu.Unlock()
	if got := p.IdleTarget(); got != 1 {
		t.Fatalf("idle target when quiet = %d, want MinIdle 1", got)
	}
	for range 3 {
		p.trimSurplus()
	}
	if n := idleCount(p); n != 1 {
		t.Fatalf("%d idle after the burst, want 1", n)
	}
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
	run(t, p, f)

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
	if v := metricValue(t, reg, "fnhook_handler_runner_ends_total", map[string]string{"reason": "failed_start"}); v < degradedAfter {
		t.Fatalf(`fnhook_handler_runner_ends_total{reason="failed_start"} = %v, want at least %d`, v, degradedAfter)
	}
	if line := `"reason":"failed_start","detail":"allocation failed: ` + jsonString(denied) + `"`; !strings.Contains(logs.String(), line) {
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
	run(t, p, f)
	eventually(t, "new runners failed and the recovered one idle", func() bool {
		return metricValue(t, reg, "fnhook_handler_pool_failed_starts", nil) >= degradedAfter && idleCount(p) == 1
	})
	if code, body := healthz(p); code != http.StatusOK || body != `{"status":"ok"}` {
		t.Fatalf("/healthz with an idle runner left = %d %s, want 200 ok: a new tenant still gets a runner", code, body)
	}
	take(t, p)
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
