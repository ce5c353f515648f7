package main

// Integration tests of a node with fewer runners than tenants: capacity, eviction, calls
// in flight and no_capacity, on the real Nomad agent with real runners.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	fnhook "github.com/fnhook/fnhook/libs"
	"github.com/fnhook/fnhook/libs/handlerapi"
	"github.com/fnhook/fnhook/libs/runnerapi"
	"github.com/fnhook/fnhook/services/handler/pool"
	"github.com/fnhook/fnhook/services/handler/runnerjob"
)

// resolveAnswer is a resolve as the gateway sees it on the wire.
type resolveAnswer struct {
	status     int
	retryAfter string
	code       string
	route      fnhook.Route
}

// resolveRaw asks the handler's resolve API with plain HTTP, keeping the status and
// Retry-After that the client hides.
func (f *fixture) resolveRaw(t *testing.T, h *handlerProc, tenant, name string) resolveAnswer {
	t.Helper()
	body, _ := json.Marshal(handlerapi.Request{Tenant: tenant, Function: name})
	req, _ := http.NewRequest(http.MethodPost, "http://"+h.addr+handlerapi.Path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+handlerapi.ResolveToken(f.secret))
	hc := &http.Client{Timeout: 60 * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		t.Errorf("resolve %s/%s: %v", tenant, name, err)
		return resolveAnswer{}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := resolveAnswer{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
	if a.status == http.StatusOK {
		if err := json.Unmarshal(raw, &a.route); err != nil {
			t.Errorf("resolve %s/%s: %v in %s", tenant, name, err, raw)
		}
		return a
	}
	var eb fnhook.ErrorBody
	if json.Unmarshal(raw, &eb) == nil && eb.Error != nil {
		a.code = eb.Error.Code
	}
	return a
}

// putSlow stores a ready function that answers after sleeping ms milliseconds.
func (f *fixture) putSlow(t *testing.T, tenant, name string, ms int) {
	t.Helper()
	now := time.Now().UTC()
	fn := fnhook.Function{
		Tenant: tenant, Name: name, Version: 1, Status: fnhook.StatusReady, TimeoutMs: ms + 10_000,
		Code:      fmt.Sprintf(`module.exports = async () => { await new Promise((r) => setTimeout(r, %d)); return "slow done"; };`, ms),
		CreatedAt: now, UpdatedAt: now,
	}
	if err := f.store.PutFunction(context.Background(), fn, 0); err != nil {
		t.Fatal(err)
	}
}

// callRaw invokes function name through the route and returns the status and body; it
// does not fail the test (it runs in goroutines).
func (f *fixture) callRaw(route fnhook.Route, name string) (int, string, error) {
	req, _ := http.NewRequest(http.MethodPost, runnerapi.RunURL(route.Address, name, "", ""), strings.NewReader("{}"))
	runnerapi.Authorize(req, route.Token)
	req.Header.Set("Content-Type", "application/json")
	hc := &http.Client{Timeout: 60 * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// metrics returns the handler's unlabelled metrics from one scrape.
func (f *fixture) metrics(t *testing.T, h *handlerProc) map[string]float64 {
	t.Helper()
	resp, err := f.http.Get("http://" + h.addr + "/metrics")
	if err != nil {
		t.Error(err)
		return nil
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if ok && !strings.HasPrefix(name, "#") && !strings.Contains(name, "{") {
			out[name], _ = strconv.ParseFloat(strings.TrimSpace(value), 64)
		}
	}
	return out
}

// watchRunners samples the handler's pool gauges until stop is closed and returns the
// most runners it saw at once.
func (f *fixture) watchRunners(t *testing.T, h *handlerProc, stop <-chan struct{}) func() int {
	var most atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			m := f.metrics(t, h)
			n := m["fnhook_handler_pool_idle"] + m["fnhook_handler_pool_assigned"] + m["fnhook_handler_pool_starting"]
			if int64(n) > most.Load() {
				most.Store(int64(n))
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return func() int { <-done; return int(most.Load()) }
}

// TestManyTenantsFewRunners: a node that holds 4 runners serves 12 tenants, each called
// twice, every call 200 (a new tenant's runner comes from evicting the least recently
// used one); a runner with a call in flight is never evicted; with every runner busy a
// new tenant gets 503 no_capacity with Retry-After, and a runner once a call ends.
func TestManyTenantsFewRunners(t *testing.T) {
	t.Parallel()
	f := setup(t)
	h := f.startHandler(t, map[string]string{"FNHOOK_POOL_MAX_RUNNERS": "4", "FNHOOK_POOL_MIN_IDLE": "1", "FNHOOK_ASSIGN_WAIT": "10s"})
	if c := f.metric(t, h, "fnhook_handler_pool_capacity"); c != 4 {
		t.Fatalf("fnhook_handler_pool_capacity = %v, want 4", c)
	}
	stop := make(chan struct{})
	most := f.watchRunners(t, h, stop)

	// Every resolve answer that is not 200 must be a 503 with Retry-After; none is
	// expected while a runner can be evicted.
	var mu sync.Mutex
	var problems []string
	note := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		problems = append(problems, fmt.Sprintf(format, args...))
	}
	check503 := func(a resolveAnswer, what string) {
		if a.status == http.StatusServiceUnavailable && a.retryAfter == "" {
			note("%s: 503 %s without Retry-After", what, a.code)
		}
	}

	const nTenants = 12
	tenants := make([]string, nTenants)
	for i := range tenants {
		tenants[i] = tenantName()
		f.putFunction(t, tenants[i], "fn", 1, `module.exports = async (ctx) => "hi " + ctx.tenant;`, nil, nil)
	}
	start := time.Now()
	for round := 1; round <= 2; round++ {
		work := make(chan string)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for tn := range work {
					what := fmt.Sprintf("round %d, tenant %s", round, tn)
					a := f.resolveRaw(t, h, tn, "fn")
					check503(a, what)
					if a.status != http.StatusOK {
						note("%s: resolve answered %d %s", what, a.status, a.code)
						continue
					}
					status, body, err := f.callRaw(a.route, "fn")
					if err != nil || status != 200 || body != "hi "+tn {
						note("%s: call = %d %q %v", what, status, body, err)
					}
				}
			})
		}
		for _, tn := range tenants {
			work <- tn
		}
		close(work)
		wg.Wait()
		t.Logf("MEASURE round %d: %d tenants on 4 runners in %s", round, nTenants, time.Since(start).Round(time.Millisecond))
		start = time.Now()
	}
	mu.Lock()
	if len(problems) > 0 {
		t.Errorf("%d calls did not answer 200:\n%s", len(problems), strings.Join(problems, "\n"))
	}
	problems = nil
	mu.Unlock()
	if ev := f.metric(t, h, "fnhook_handler_evictions_total"); ev < nTenants-4 {
		t.Errorf("fnhook_handler_evictions_total = %v, want at least %d", ev, nTenants-4)
	}

	// A runner with a call in flight is never evicted: while a slow call runs (longer than
	// the runner's drain on SIGTERM, so an eviction would break it), 6 new tenants come.
	slow := tenantName()
	f.putSlow(t, slow, "slow", 8000)
	sr := f.resolveRaw(t, h, slow, "slow")
	if sr.status != http.StatusOK {
		t.Fatalf("resolve of the slow tenant = %+v", sr)
	}
	type result struct {
		status int
		body   string
		err    error
	}
	slowDone := make(chan result, 1)
	go func() {
		s, b, err := f.callRaw(sr.route, "slow")
		slowDone <- result{s, b, err}
	}()
	waitFor(t, "the slow call in flight", 10*time.Second, func() bool {
		st, err := f.runners.State(context.Background(), runnerapi.Runner{Address: sr.route.Address, Token: sr.route.Token})
		return err == nil && st.Inflight != nil && *st.Inflight == 1
	})
	evBefore := f.metric(t, h, "fnhook_handler_evictions_total")
	for range 6 {
		tn := tenantName()
		f.putFunction(t, tn, "fn", 1, `module.exports = async (ctx) => "hi " + ctx.tenant;`, nil, nil)
		a := f.resolveRaw(t, h, tn, "fn")
		check503(a, "beside the slow call, tenant "+tn)
		if a.status != http.StatusOK {
			t.Errorf("beside the slow call, tenant %s: resolve %d %s", tn, a.status, a.code)
			continue
		}
		if s, b, err := f.callRaw(a.route, "fn"); err != nil || s != 200 || b != "hi "+tn {
			t.Errorf("beside the slow call, tenant %s: call = %d %q %v", tn, s, b, err)
		}
	}
	if ev := f.metric(t, h, "fnhook_handler_evictions_total") - evBefore; ev < 3 {
		t.Errorf("%v evictions beside the slow call, want at least 3 (the other runners)", ev)
	}
	if r := <-slowDone; r.err != nil || r.status != 200 || r.body != "slow done" {
		t.Fatalf("the slow call = %d %q %v: its runner was ended under it", r.status, r.body, r.err)
	}

	// Every runner busy: a new tenant waits FNHOOK_ASSIGN_WAIT, then 503 no_capacity with
	// Retry-After; once a call ends, it gets a runner.
	busy := make([]string, 4)
	busyDone := make(chan result, 4)
	for i := range busy {
		busy[i] = tenantName()
		f.putSlow(t, busy[i], "slow", 14000)
	}
	for _, tn := range busy {
		a := f.resolveRaw(t, h, tn, "slow")
		check503(a, "busy tenant "+tn)
		if a.status != http.StatusOK {
			t.Fatalf("busy tenant %s: resolve %d %s", tn, a.status, a.code)
		}
		go func() {
			s, b, err := f.callRaw(a.route, "slow")
			busyDone <- result{s, b, err}
		}()
		waitFor(t, "the busy call in flight", 10*time.Second, func() bool {
			st, err := f.runners.State(context.Background(), runnerapi.Runner{Address: a.route.Address, Token: a.route.Token})
			return err == nil && st.Inflight != nil && *st.Inflight == 1
		})
	}
	late := tenantName()
	f.putFunction(t, late, "fn", 1, `module.exports = async () => "late";`, nil, nil)
	t0 := time.Now()
	a := f.resolveRaw(t, h, late, "fn")
	if a.status != http.StatusServiceUnavailable || a.code != fnhook.CodeNoCapacity || a.retryAfter == "" {
		t.Fatalf("resolve with every runner busy = %d %s Retry-After %q, want 503 no_capacity with Retry-After", a.status, a.code, a.retryAfter)
	}
	if took := time.Since(t0); took < 9*time.Second {
		t.Fatalf("no_capacity after %s, want after FNHOOK_ASSIGN_WAIT (10s)", took)
	}
	t.Logf("MEASURE no_capacity with every runner busy after %s, Retry-After %s", time.Since(t0).Round(time.Millisecond), a.retryAfter)
	if r := <-busyDone; r.err != nil || r.status != 200 {
		t.Fatalf("a busy call = %d %q %v", r.status, r.body, r.err)
	}
	waitFor(t, "a runner for the late tenant", 20*time.Second, func() bool {
		a := f.resolveRaw(t, h, late, "fn")
		check503(a, "late tenant")
		if a.status != http.StatusOK {
			return false
		}
		s, b, err := f.callRaw(a.route, "fn")
		return err == nil && s == 200 && b == "late"
	})
	for range 3 {
		if r := <-busyDone; r.err != nil || r.status != 200 {
			t.Errorf("a busy call = %d %q %v: its runner was ended under it", r.status, r.body, r.err)
		}
	}
	close(stop)
	if n := most(); n > 4 {
		t.Errorf("the handler held %d runners at once, capacity 4", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Errorf("%s", strings.Join(problems, "\n"))
	}
}

// TestCapacityFromNode: without FNHOOK_POOL_MAX_RUNNERS, the handler's capacity follows
// from what Nomad says the node can allocate and what one runner reserves.
func TestCapacityFromNode(t *testing.T) {
	t.Parallel()
	f := setup(t)
	h := f.startHandler(t, map[string]string{"FNHOOK_POOL_MIN_IDLE": "0"})
	node, err := nodeID(f.nomad)
	if err != nil {
		t.Fatal(err)
	}
	alloc, err := runnerjob.Allocatable(context.Background(), f.nomad, node)
	if err != nil {
		t.Fatal(err)
	}
	// The defaults: runners reserve 64 MB, 10 MHz and their 150 MB disk; the services
	// keep 2560 MB, 1000 MHz and 4096 MB.
	want, bound := pool.Capacity(alloc, runnerjob.Resources{MemoryMB: 2560, CPUMHz: 1000, DiskMB: 4096},
		runnerjob.Resources{MemoryMB: 64, CPUMHz: 10, DiskMB: 150})
	got := f.metric(t, h, "fnhook_handler_pool_capacity")
	t.Logf("MEASURE node allocatable %+v: capacity %v (bound by %s)", alloc, got, bound)
	if int(got) != want || want < 1 {
		t.Fatalf("fnhook_handler_pool_capacity = %v, want %d (bound by %s) from the node's %+v", got, want, bound, alloc)
	}
	// The handler says so at start, with where the number comes from.
	logs, err := os.ReadFile(h.logPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"msg":"runner capacity"`, fmt.Sprintf(`"max_runners":%d`, want), `"source":"node"`, `"bound_by":"` + bound + `"`} {
		if !strings.Contains(string(logs), want) {
			t.Fatalf("the handler's log has no %s:\n%s", want, logs)
		}
	}
}
