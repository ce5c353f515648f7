package tenants

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	fnhook "github.com/fnhook/fnhook/libs"
	"github.com/fnhook/fnhook/libs/runnerapi"
	"github.com/fnhook/fnhook/services/handler/pool"
)

// clock is a settable time for the table.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fakeStore holds function manifests.
type fakeStore struct {
	mu  sync.Mutex
	fns map[string]fnhook.Function
}

func (s *fakeStore) put(f fnhook.Function) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Status == "" {
		f.Status = fnhook.StatusReady
	}
	if f.TimeoutMs == 0 {
		f.TimeoutMs = 1000
	}
	s.fns[f.Tenant+"/"+f.Name] = f
}

func (s *fakeStore) GetFunction(_ context.Context, tenant, name string) (fnhook.Function, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.fns[tenant+"/"+name]
	if !ok {
		return fnhook.Function{}, fnhook.Errorf(fnhook.CodeNotFound, "no function %s/%s", tenant, name)
	}
	return f, nil
}

type fakeModules struct{ err error }

func (m fakeModules) Ensure(context.Context, map[string]string) error { return m.err }

// fakeRunner is a runner as the fake protocol sees it; its address is its job id.
type fakeRunner struct {
	tenant    string
	functions map[string]int
	broken    bool  // answers nothing
	loadErr   error // every load fails so
	inflight  *int
	idleMs    *int64
	logs      []runnerapi.LogEntry
}

// fakes is the pool and the runner protocol at once: Take hands out fresh runners up to
// capacity (ErrFull beyond), End records why a runner ended.
type fakes struct {
	mu       sync.Mutex
	capacity int
	seq      int
	live     map[string]*fakeRunner
	ended    map[string]pool.EndReason
	assigns  int
	loads    int
	states   int
	degraded string
	takeErr  error
	start    time.Duration // how long a new runner takes to start
}

func newFakes(capacity int) *fakes {
	return &fakes{capacity: capacity, live: map[string]*fakeRunner{}, ended: map[string]pool.EndReason{}}
}

func (f *fakes) Take(ctx context.Context) (pool.Runner, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.takeErr != nil {
		return pool.Runner{}, f.takeErr
	}
	if len(f.live) >= f.capacity {
		return pool.Runner{}, pool.ErrFull
	}
	if f.start > 0 {
		f.mu.Unlock()
		select {
		case <-time.After(f.start):
		case <-ctx.Done():
		}
		f.mu.Lock()
		if ctx.Err() != nil {
			return pool.Runner{}, ctx.Err()
		}
	}
	f.seq++
	id := fmt.Sprintf("job-%02d", f.seq)
	f.live[id] = &fakeRunner{functions: map[string]int{}}
	return pool.Runner{JobID: id, Address: id, Token: "token-" + id}, nil
}

func (f *fakes) End(jobID string, reason pool.EndReason, _ string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.live[jobID]; ok {
		delete(f.live, jobID)
		f.ended[jobID] = reason
	}
}

func (f *fakes) WaitRecovered(context.Context) error { return nil }

func (f *fakes) Degraded() string { f.mu.Lock(); defer f.mu.Unlock(); return f.degraded }

func (f *fakes) runner(r runnerapi.Runner) (*fakeRunner, error) {
	fr := f.live[r.Address]
	if fr == nil || fr.broken {
		return nil, errors.New("connection refused")
	}
	if r.Token != "token-"+r.Address {
		return nil, &fnhook.Error{Code: "unauthorized", Status: 401}
	}
	return fr, nil
}

func (f *fakes) Assign(_ context.Context, r runnerapi.Runner, tenant string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fr, err := f.runner(r)
	if err != nil {
		return err
	}
	if fr.tenant != "" {
		return &fnhook.Error{Code: fnhook.CodeAlreadyAssigned, Status: 409}
	}
	fr.tenant = tenant
	f.assigns++
	return nil
}

func (f *fakes) Load(_ context.Context, r runnerapi.Runner, name string, fn runnerapi.Function) (runnerapi.Loaded, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fr, err := f.runner(r)
	if err != nil {
		return runnerapi.Loaded{}, err
	}
	f.loads++
	if fr.loadErr != nil {
		return runnerapi.Loaded{}, fr.loadErr
	}
	if fr.tenant == "" {
		return runnerapi.Loaded{}, &fnhook.Error{Code: fnhook.CodeNotAssigned, Status: 409}
	}
	if fn.Code == "syntax error" {
		return runnerapi.Loaded{}, &fnhook.Error{Code: fnhook.CodeCompileError, Status: 422, Message: "SyntaxError at line 1"}
	}
	fr.functions[name] = max(fr.functions[name], fn.Version)
	return runnerapi.Loaded{Name: name, Version: fr.functions[name]}, nil
}

func (f *fakes) Unload(_ context.Context, r runnerapi.Runner, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fr, err := f.runner(r)
	if err != nil {
		return err
	}
	if _, ok := fr.functions[name]; !ok {
		return &fnhook.Error{Code: fnhook.CodeFunctionNotLoaded, Status: 404}
	}
	delete(fr.functions, name)
	return nil
}

func (f *fakes) State(_ context.Context, r runnerapi.Runner) (runnerapi.State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.states++
	fr, err := f.runner(r)
	if err != nil {
		return runnerapi.State{}, err
	}
	fns := map[string]int{}
	for k, v := range fr.functions {
		fns[k] = v
	}
	return runnerapi.State{Tenant: fr.tenant, Functions: fns, Inflight: fr.inflight, IdleMs: fr.idleMs}, nil
}

// FollowLogs hands out the fake runner's log lines after the cursor as they come, until
// ctx ends or the runner is gone.
func (f *fakes) FollowLogs(ctx context.Context, r runnerapi.Runner, after int64, _ time.Duration, fn func(runnerapi.LogBatch) error) (int64, error) {
	for {
		f.mu.Lock()
		fr, err := f.runner(r)
		var lines []runnerapi.LogEntry
		if err == nil && int64(len(fr.logs)) > after {
			lines = append(lines, fr.logs[after:]...)
		}
		f.mu.Unlock()
		if err != nil {
			return after, err
		}
		if len(lines) > 0 {
			after += int64(len(lines))
			if err := fn(runnerapi.LogBatch{Lines: lines, Next: after}); err != nil {
				return after, err
			}
		}
		select {
		case <-ctx.Done():
			return after, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// set changes the fake runner at address.
func (f *fakes) set(address string, change func(*fakeRunner)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(f.live[address])
}

func (f *fakes) endedAs(jobID string) (pool.EndReason, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.ended[jobID]
	return r, ok
}

func (f *fakes) count() (assigns, loads int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.assigns, f.loads
}

type world struct {
	t     *testing.T
	table *Table
	fakes *fakes
	store *fakeStore
	clock *clock
}

func newWorld(t *testing.T, capacity int, cfg Config) *world {
	t.Helper()
	f := newFakes(capacity)
	s := &fakeStore{fns: map[string]fnhook.Function{}}
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	if cfg.AssignWait == 0 {
		cfg.AssignWait = 300 * time.Millisecond
	}
	tb := New(cfg, s, fakeModules{}, f, f, slog.New(slog.DiscardHandler), nil)
	tb.now = c.now
	return &world{t: t, table: tb, fakes: f, store: s, clock: c}
}

// tenant stores a ready function "fn" v1 of tenant.
func (w *world) tenant(name string) {
	w.store.put(fnhook.Function{Tenant: name, Name: "fn", Version: 1, Code: "ok"})
}

func (w *world) resolve(tenant string) fnhook.Route {
	w.t.Helper()
	route, err := w.table.Resolve(context.Background(), tenant, "fn", false)
	if err != nil {
		w.t.Fatalf("resolve %s: %v", tenant, err)
	}
	return route
}

func ms(v int64) *int64 { return &v }
func n(v int) *int      { return &v }

func TestResolveColdThenWarm(t *testing.T) {
	w := newWorld(t, 4, Config{})
	w.tenant("acme")
	cold := w.resolve("acme")
	if !cold.Cold || cold.Version != 1 || cold.Address == "" || cold.Token != "token-"+cold.Address {
		t.Fatalf("first resolve = %+v, want cold v1 with the runner's token", cold)
	}
	assigns, loads := w.fakes.count()
	for range 5 {
		if warm := w.resolve("acme"); warm.Cold || warm.Address != cold.Address {
			t.Fatalf("next resolve = %+v, want warm on %s", warm, cold.Address)
		}
	}
	if a, l := w.fakes.count(); a != assigns || l != loads || a != 1 || l != 1 {
		t.Fatalf("assigns %d loads %d after warm resolves, want 1 and 1", a, l)
	}
	// A new version is loaded on the same runner.
	w.store.put(fnhook.Function{Tenant: "acme", Name: "fn", Version: 2, Code: "ok"})
	if r := w.resolve("acme"); !r.Cold || r.Version != 2 || r.Address != cold.Address {
		t.Fatalf("resolve of v2 = %+v, want cold v2 on the same runner", r)
	}
}

func TestResolveErrors(t *testing.T) {
	w := newWorld(t, 4, Config{})
	w.tenant("acme")
	w.store.put(fnhook.Function{Tenant: "acme", Name: "building", Version: 1, Status: fnhook.StatusBuilding, Pending: []string{"left-pad@1.3.0"}})
	w.store.put(fnhook.Function{Tenant: "acme", Name: "failed", Version: 1, Status: fnhook.StatusFailed, Error: "npm ERR! 404"})
	w.store.put(fnhook.Function{Tenant: "acme", Name: "broken", Version: 1, Code: "syntax error"})
	home := w.resolve("acme")
	tests := []struct {
		fn     string
		code   string
		status int
	}{
		{"missing", fnhook.CodeNotFound, http.StatusNotFound},
		{"building", fnhook.CodeFunctionBuilding, http.StatusServiceUnavailable},
		{"failed", fnhook.CodeFunctionFailed, http.StatusFailedDependency},
		{"broken", fnhook.CodeFunctionFailed, http.StatusFailedDependency},
	}
	for _, tt := range tests {
		t.Run(tt.fn, func(t *testing.T) {
			_, err := w.table.Resolve(context.Background(), "acme", tt.fn, false)
			if fnhook.ErrorCode(err) != tt.code || fnhook.StatusOf(err) != tt.status {
				t.Fatalf("resolve %s = %v, want %s %d", tt.fn, err, tt.code, tt.status)
			}
		})
	}
	// A function the runner refused does not cost the tenant its runner.
	if again := w.resolve("acme"); again.Address != home.Address {
		t.Fatalf("after a compile error the tenant moved to %s", again.Address)
	}
}

func TestResolveRetriesOverThreeRunners(t *testing.T) {
	tests := []struct {
		name      string
		badLoads  int // runners whose loads fail before one works
		wantErr   bool
		wantEnded int
	}{
		{"one broken runner", 1, false, 1},
		{"two broken runners", 2, false, 2},
		{"three broken runners: give up, keeping the last", 3, true, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, 8, Config{})
			w.tenant("acme")
			bad := 0
			// Each runner the tenant is given fails its load until badLoads did.
			w.fakes.mu.Lock()
			w.fakes.capacity = 8
			w.fakes.mu.Unlock()
			orig := w.table.runners
			w.table.runners = loadHook{Runners: orig, before: func(r runnerapi.Runner) error {
				if bad < tt.badLoads {
					bad++
					return errors.New("connection reset by peer")
				}
				return nil
			}}
			route, err := w.table.Resolve(context.Background(), "acme", "fn", false)
			if tt.wantErr {
				if fnhook.ErrorCode(err) != fnhook.CodeUnavailable || fnhook.StatusOf(err) != 503 {
					t.Fatalf("resolve = %v, want unavailable 503", err)
				}
			} else if err != nil || !route.Cold {
				t.Fatalf("resolve = %+v, %v", route, err)
			}
			ended := 0
			for id := range map[string]bool{"job-01": true, "job-02": true, "job-03": true} {
				if reason, ok := w.fakes.endedAs(id); ok {
					if reason != pool.EndLoadFailed {
						t.Fatalf("%s ended as %s, want load_failed", id, reason)
					}
					ended++
				}
			}
			if ended != tt.wantEnded {
				t.Fatalf("%d runners ended, want %d", ended, tt.wantEnded)
			}
		})
	}
}

// loadHook fails loads as before says.
type loadHook struct {
	Runners
	before func(runnerapi.Runner) error
}

func (h loadHook) Load(ctx context.Context, r runnerapi.Runner, name string, f runnerapi.Function) (runnerapi.Loaded, error) {
	if err := h.before(r); err != nil {
		return runnerapi.Loaded{}, err
	}
	return h.Runners.Load(ctx, r, name, f)
}

func TestRefresh(t *testing.T) {
	tests := []struct {
		name       string
		change     func(*fakeRunner)
		sameRunner bool
		ended      pool.EndReason
	}{
		{"the runner lost the function: loaded again", func(r *fakeRunner) { delete(r.functions, "fn") }, true, 0},
		{"the runner does not answer: a fresh one", func(r *fakeRunner) { r.broken = true }, false, pool.EndUnhealthy},
		{"the runner serves someone else: a fresh one", func(r *fakeRunner) { r.tenant = "intruder" }, false, pool.EndForeign},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, 4, Config{})
			w.tenant("acme")
			first := w.resolve("acme")
			w.fakes.set(first.Address, tt.change)
			again, err := w.table.Resolve(context.Background(), "acme", "fn", true)
			if err != nil || !again.Cold || (again.Address == first.Address) != tt.sameRunner {
				t.Fatalf("refresh resolve = %+v, %v; want cold, same runner %v", again, err, tt.sameRunner)
			}
			reason, ended := w.fakes.endedAs(first.Address)
			if tt.ended == 0 && ended {
				t.Fatalf("the runner ended as %s", reason)
			}
			if tt.ended != 0 && reason != tt.ended {
				t.Fatalf("the runner ended as %v (%v), want %s", reason, ended, tt.ended)
			}
		})
	}
}

func TestEvents(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t, 4, Config{})
	w.tenant("acme")
	route := w.resolve("acme")
	// function.changed: the new version is on the runner before any resolve.
	w.store.put(fnhook.Function{Tenant: "acme", Name: "fn", Version: 2, Code: "ok"})
	if err := w.table.FunctionChanged(ctx, fnhook.FunctionChanged{Tenant: "acme", Function: "fn", Version: 2}); err != nil {
		t.Fatal(err)
	}
	st, _ := w.fakes.State(ctx, runnerapi.Runner{Address: route.Address, Token: route.Token})
	if st.Functions["fn"] != 2 {
		t.Fatalf("runner has %v after the event, want fn v2", st.Functions)
	}
	if r := w.resolve("acme"); r.Cold || r.Version != 2 {
		t.Fatalf("resolve after the event = %+v, want warm v2", r)
	}
	// A stale event changes nothing; one for a tenant without a runner neither.
	_, loads := w.fakes.count()
	_ = w.table.FunctionChanged(ctx, fnhook.FunctionChanged{Tenant: "acme", Function: "fn", Version: 1})
	_ = w.table.FunctionChanged(ctx, fnhook.FunctionChanged{Tenant: "nobody", Function: "fn", Version: 9})
	if _, l := w.fakes.count(); l != loads {
		t.Fatalf("%d loads for stale or foreign events", l-loads)
	}
	// Deleted: unloaded at once.
	if err := w.table.FunctionChanged(ctx, fnhook.FunctionChanged{Tenant: "acme", Function: "fn", Version: 3, Deleted: true}); err != nil {
		t.Fatal(err)
	}
	if st, _ := w.fakes.State(ctx, runnerapi.Runner{Address: route.Address, Token: route.Token}); len(st.Functions) != 0 {
		t.Fatalf("runner still has %v after the delete", st.Functions)
	}
	// tenant.deleted: its runner ends.
	if err := w.table.TenantDeleted(ctx, fnhook.TenantDeleted{Tenant: "acme"}); err != nil {
		t.Fatal(err)
	}
	if reason, _ := w.fakes.endedAs(route.Address); reason != pool.EndDeleted {
		t.Fatalf("runner ended as %v, want deleted", reason)
	}
	if w.table.has("acme") {
		t.Fatal("the deleted tenant still has a runner")
	}
}

// fill resolves each tenant in turn, a second apart, and lets their resolve windows pass.
func (w *world) fill(tenants ...string) map[string]string {
	addr := map[string]string{}
	for _, tn := range tenants {
		w.tenant(tn)
		addr[tn] = w.resolve(tn).Address
		w.clock.advance(time.Second)
	}
	w.clock.advance(time.Minute)
	return addr
}

func TestEvictionTakesLeastRecentlyUsed(t *testing.T) {
	w := newWorld(t, 3, Config{})
	addr := w.fill("a", "b", "c")
	// The runners report no call since their resolve.
	for _, ad := range addr {
		idle := w.clock.now().Sub(w.table.byJob[ad].lastUsed).Milliseconds()
		w.fakes.set(ad, func(r *fakeRunner) { r.inflight, r.idleMs = n(0), ms(idle) })
	}
	w.tenant("d")
	d := w.resolve("d")
	if !d.Cold {
		t.Fatalf("new tenant's resolve = %+v, want cold", d)
	}
	if reason, ok := w.fakes.endedAs(addr["a"]); !ok || reason != pool.EndEvicted {
		t.Fatalf("a (least recently used) ended as %v (%v), want evicted", reason, ok)
	}
	// b is older by the table's last resolve, but its runner reports a call a moment ago
	// (through the gateway's cached route): c goes instead.
	w.clock.advance(time.Minute)
	w.fakes.set(addr["b"], func(r *fakeRunner) { r.idleMs = ms(500) })
	w.fakes.set(addr["c"], func(r *fakeRunner) { r.idleMs = ms(120_000) })
	w.tenant("e")
	w.resolve("e")
	if _, ok := w.fakes.endedAs(addr["b"]); ok {
		t.Fatal("b was evicted although its runner served a call a moment ago")
	}
	if reason, _ := w.fakes.endedAs(addr["c"]); reason != pool.EndEvicted {
		t.Fatalf("c ended as %v, want evicted", reason)
	}
	if v := testutil.ToFloat64(w.table.m.evictions); v != 2 {
		t.Fatalf("fnhook_handler_evictions_total = %v, want 2", v)
	}
	// The evicted tenant's next call is simply cold.
	if again := w.resolve("a"); !again.Cold || again.Address == addr["a"] {
		t.Fatalf("evicted tenant's resolve = %+v, want cold on a fresh runner", again)
	}
}

func TestEvictionSparesCallsInFlight(t *testing.T) {
	w := newWorld(t, 2, Config{})
	addr := w.fill("a", "b")
	w.fakes.set(addr["a"], func(r *fakeRunner) { r.inflight, r.idleMs = n(1), ms(0) })
	w.fakes.set(addr["b"], func(r *fakeRunner) { r.inflight, r.idleMs = n(0), ms(5_000) })
	w.tenant("c")
	w.resolve("c")
	if _, ok := w.fakes.endedAs(addr["a"]); ok {
		t.Fatal("a runner with a call in flight was evicted")
	}
	if reason, _ := w.fakes.endedAs(addr["b"]); reason != pool.EndEvicted {
		t.Fatalf("b ended as %v, want evicted", reason)
	}
}

func TestEvictionSparesResolveWindow(t *testing.T) {
	// A resolve sends a call to the runner. Until it can have arrived (callSlack) the
	// runner is spared whatever it says; after that, a runner that reports its calls is
	// judged by its report, and one that does not is spared for the function's timeout.
	tests := []struct {
		name     string
		inflight *int
		after    time.Duration // from the resolve
		evicted  bool
	}{
		{"just resolved, reporting runner", n(0), callSlack / 2, false},
		{"after the slack, reporting runner with no call", n(0), callSlack + time.Millisecond, true},
		{"after the slack, reporting runner with the call running", n(1), callSlack + time.Millisecond, false},
		{"after the slack, runner that does not report", nil, callSlack + time.Millisecond, false},
		{"after the timeout, runner that does not report", nil, time.Second + callSlack + time.Millisecond, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, 1, Config{AssignWait: 100 * time.Millisecond})
			w.tenant("a") // timeout 1 s
			a := w.resolve("a")
			w.fakes.set(a.Address, func(r *fakeRunner) { r.inflight, r.idleMs = tt.inflight, ms(0) })
			w.clock.advance(tt.after)
			w.tenant("b")
			start := time.Now()
			_, err := w.table.Resolve(context.Background(), "b", "fn", false)
			_, ended := w.fakes.endedAs(a.Address)
			if ended != tt.evicted {
				t.Fatalf("a evicted=%v, want %v (resolve of b: %v)", ended, tt.evicted, err)
			}
			if tt.evicted {
				if err != nil {
					t.Fatalf("resolve of b = %v", err)
				}
				return
			}
			if fnhook.ErrorCode(err) != fnhook.CodeNoCapacity || fnhook.StatusOf(err) != 503 {
				t.Fatalf("resolve with the only runner busy = %v, want no_capacity 503", err)
			}
			if took := time.Since(start); took < 80*time.Millisecond || took > 2*time.Second {
				t.Fatalf("no_capacity after %s, want after AssignWait (100ms)", took)
			}
			if v := testutil.ToFloat64(w.table.m.noCapacity); v != 1 {
				t.Fatalf("fnhook_handler_no_capacity_total = %v, want 1", v)
			}
		})
	}
}

func TestNoCapacityWaitsForACallToEnd(t *testing.T) {
	w := newWorld(t, 1, Config{AssignWait: 3 * time.Second})
	addr := w.fill("a")
	w.fakes.set(addr["a"], func(r *fakeRunner) { r.inflight, r.idleMs = n(1), ms(0) })
	w.tenant("b")
	go func() {
		time.Sleep(300 * time.Millisecond)
		w.fakes.set(addr["a"], func(r *fakeRunner) { r.inflight, r.idleMs = n(0), ms(10) })
	}()
	start := time.Now()
	if r := w.resolve("b"); !r.Cold {
		t.Fatalf("resolve = %+v", r)
	}
	if took := time.Since(start); took < 250*time.Millisecond {
		t.Fatalf("got a runner after %s while the only one had a call in flight", took)
	}
	if reason, _ := w.fakes.endedAs(addr["a"]); reason != pool.EndEvicted {
		t.Fatalf("a ended as %v once its call ended, want evicted", reason)
	}
}

func TestEvictionRestartsTheWait(t *testing.T) {
	// The only runner has a call in flight for a while; once it ends, the runner is
	// evicted and a fresh one starts for the newcomer: the start gets a full AssignWait of
	// its own, as the room was made for the newcomer.
	w := newWorld(t, 1, Config{AssignWait: 400 * time.Millisecond})
	addr := w.fill("a")
	w.fakes.set(addr["a"], func(r *fakeRunner) { r.inflight, r.idleMs = n(1), ms(0) })
	w.fakes.mu.Lock()
	w.fakes.start = 300 * time.Millisecond
	w.fakes.mu.Unlock()
	go func() {
		time.Sleep(300 * time.Millisecond)
		w.fakes.set(addr["a"], func(r *fakeRunner) { r.inflight = n(0) })
	}()
	w.tenant("b")
	start := time.Now()
	if r := w.resolve("b"); !r.Cold {
		t.Fatalf("resolve = %+v", r)
	}
	if took := time.Since(start); took < 550*time.Millisecond {
		t.Fatalf("took %s, want the wait for the call (300ms) and the start (300ms)", took)
	}
}

func TestEvictionEndsRunnerThatDoesNotAnswer(t *testing.T) {
	w := newWorld(t, 2, Config{})
	addr := w.fill("a", "b")
	w.fakes.set(addr["a"], func(r *fakeRunner) { r.inflight = n(1) })
	w.fakes.set(addr["b"], func(r *fakeRunner) { r.broken = true })
	w.tenant("c")
	w.resolve("c")
	if reason, _ := w.fakes.endedAs(addr["b"]); reason != pool.EndUnhealthy {
		t.Fatalf("b ended as %v, want unhealthy", reason)
	}
}

func TestNoEvictionWhileNoRunnerStarts(t *testing.T) {
	w := newWorld(t, 1, Config{AssignWait: 100 * time.Millisecond})
	addr := w.fill("a")
	w.fakes.set(addr["a"], func(r *fakeRunner) { r.inflight, r.idleMs = n(0), ms(600_000) })
	w.fakes.mu.Lock()
	w.fakes.degraded = "no runner could start: allocation failed"
	w.fakes.mu.Unlock()
	w.tenant("b")
	if _, err := w.table.Resolve(context.Background(), "b", "fn", false); fnhook.ErrorCode(err) != fnhook.CodeNoCapacity {
		t.Fatalf("resolve = %v, want no_capacity", err)
	}
	if _, ok := w.fakes.endedAs(addr["a"]); ok {
		t.Fatal("a tenant was evicted although no runner can start for the newcomer")
	}
}

func TestEvictionSparesTenantInWork(t *testing.T) {
	w := newWorld(t, 2, Config{})
	addr := w.fill("a", "b")
	for _, ad := range addr {
		w.fakes.set(ad, func(r *fakeRunner) { r.inflight, r.idleMs = n(0), ms(60_000) })
	}
	// Someone holds a's lock (a resolve loading, an event): a is not a candidate.
	tn, _, err := w.table.lock(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	w.tenant("c")
	w.resolve("c")
	w.table.unlock(tn)
	if _, ok := w.fakes.endedAs(addr["a"]); ok {
		t.Fatal("a tenant in work was evicted")
	}
	if reason, _ := w.fakes.endedAs(addr["b"]); reason != pool.EndEvicted {
		t.Fatalf("b ended as %v, want evicted", reason)
	}
}

func TestReapIdle(t *testing.T) {
	tests := []struct {
		name     string
		inflight *int
		idleMs   *int64
		broken   bool
		ended    bool
	}{
		{"runner does not report: the last resolve decides", nil, nil, false, true},
		{"runner was called a second ago", n(0), ms(1000), false, false},
		{"runner has a call in flight", n(1), ms(900_000), false, false},
		{"runner idle as long as the table thinks", n(0), ms(3_600_000), false, true},
		{"runner does not answer", nil, nil, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, 4, Config{IdleTimeout: time.Minute})
			w.tenant("acme")
			r := w.resolve("acme")
			w.fakes.set(r.Address, func(fr *fakeRunner) { fr.inflight, fr.idleMs, fr.broken = tt.inflight, tt.idleMs, tt.broken })
			w.clock.advance(2 * time.Minute)
			w.table.reapIdle(context.Background())
			reason, ended := w.fakes.endedAs(r.Address)
			if ended != tt.ended || (ended && reason != pool.EndIdle) {
				t.Fatalf("ended=%v as %v, want ended=%v as idle", ended, reason, tt.ended)
			}
			if w.table.has("acme") == tt.ended {
				t.Fatalf("table has acme's runner: %v, want %v", w.table.has("acme"), !tt.ended)
			}
		})
	}
}

func TestAdoptAndLost(t *testing.T) {
	w := newWorld(t, 4, Config{})
	w.tenant("acme")
	// A runner a previous handler assigned to acme, with fn v1 loaded.
	id, _ := w.fakes.Take(context.Background())
	w.fakes.set(id.Address, func(r *fakeRunner) { r.tenant, r.functions["fn"] = "acme", 1 })
	if !w.table.Adopt(id, runnerapi.State{Tenant: "acme", Functions: map[string]int{"fn": 1}}) {
		t.Fatal("Adopt refused the tenant's only runner")
	}
	if w.table.Adopt(pool.Runner{JobID: "job-99", Address: "job-99"}, runnerapi.State{Tenant: "acme"}) {
		t.Fatal("Adopt took a second runner of one tenant")
	}
	if r := w.resolve("acme"); r.Cold || r.Address != id.Address {
		t.Fatalf("resolve after adoption = %+v, want warm on %s", r, id.Address)
	}
	// The pool says the runner's allocation stopped: the next resolve gets a fresh one.
	w.fakes.End(id.JobID, pool.EndAllocation, "")
	w.table.Lost(id.JobID, pool.EndAllocation)
	if r := w.resolve("acme"); !r.Cold || r.Address == id.Address {
		t.Fatalf("resolve after the runner was lost = %+v, want cold on a fresh runner", r)
	}
}

func TestConcurrentResolvesOneRunner(t *testing.T) {
	w := newWorld(t, 4, Config{})
	w.tenant("acme")
	var wg sync.WaitGroup
	routes := make([]fnhook.Route, 20)
	errs := make([]error, 20)
	for i := range 20 {
		wg.Go(func() { routes[i], errs[i] = w.table.Resolve(context.Background(), "acme", "fn", false) })
	}
	wg.Wait()
	for i := range 20 {
		if errs[i] != nil || routes[i].Address != routes[0].Address {
			t.Fatalf("resolve %d = %+v, %v; resolve 0 went to %s", i, routes[i], errs[i], routes[0].Address)
		}
	}
	if a, l := w.fakes.count(); a != 1 || l != 1 {
		t.Fatalf("%d assigns and %d loads for one tenant, want 1 and 1", a, l)
	}
}

func TestTableForgetsTenantsWithoutRunner(t *testing.T) {
	w := newWorld(t, 1, Config{AssignWait: 50 * time.Millisecond})
	w.fakes.mu.Lock()
	w.fakes.takeErr = context.DeadlineExceeded
	w.fakes.mu.Unlock()
	for i := range 50 {
		w.tenant(fmt.Sprintf("t%d", i))
		_, _ = w.table.Resolve(context.Background(), fmt.Sprintf("t%d", i), "fn", false)
	}
	w.table.mu.Lock()
	defer w.table.mu.Unlock()
	if len(w.table.tenants) != 0 {
		t.Fatalf("%d entries for tenants that never got a runner", len(w.table.tenants))
	}
}

// syncBuffer is a log destination the table's goroutines may write to while a test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range bytes.Split(s.b.Bytes(), []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(l, &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

func TestRunnerLogsInHandlerLog(t *testing.T) {
	w := newWorld(t, 4, Config{})
	var logs syncBuffer
	w.table.log = slog.New(slog.NewJSONHandler(&logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.table.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	w.tenant("acme")
	r := w.resolve("acme")
	w.fakes.set(r.Address, func(fr *fakeRunner) {
		fr.logs = append(fr.logs,
			runnerapi.LogEntry{Seq: 1, Source: runnerapi.LogSourceFunction, Level: "log", Function: "fn", Version: 1, RequestID: "req-1", Msg: "hello from acme"},
			runnerapi.LogEntry{Seq: 2, Source: runnerapi.LogSourceFunction, Level: "warn", Function: "fn", Version: 1, Msg: "careful"},
			runnerapi.LogEntry{Seq: 3, Source: runnerapi.LogSourceRunner, Level: "error", Msg: "call timed out", Attrs: map[string]any{"ms": 1000}})
	})
	find := func(msg string) map[string]any {
		for _, l := range logs.lines() {
			if l["msg"] == msg {
				return l
			}
		}
		return nil
	}
	deadline := time.Now().Add(5 * time.Second)
	for find("call timed out") == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	tests := []struct {
		msg    string
		want   map[string]any
		absent string
	}{
		{"hello from acme", map[string]any{"level": "INFO", "log": "tenant", "tenant": "acme", "function": "fn", "source": "function", "request_id": "req-1"}, ""},
		{"careful", map[string]any{"level": "WARN", "tenant": "acme", "function": "fn"}, ""},
		{"call timed out", map[string]any{"level": "ERROR", "tenant": "acme", "source": "runner"}, ""},
	}
	for _, tt := range tests {
		l := find(tt.msg)
		if l == nil {
			t.Fatalf("no handler log line %q in\n%s", tt.msg, logs.b.String())
		}
		for k, v := range tt.want {
			if l[k] != v {
				t.Fatalf("line %q: %s = %v, want %v (%v)", tt.msg, k, l[k], v, l)
			}
		}
	}
	// The runner ends with its tenant: its reader stops (Run returns, waiting for it).
	if err := w.table.TenantDeleted(context.Background(), fnhook.TenantDeleted{Tenant: "acme"}); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return: a log reader is stuck")
	}
}
