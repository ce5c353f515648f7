package main

// Integration tests: real handlers (run in this process through run) on the real Nomad
// agent, Consul, RabbitMQ, DynamoDB Local and S3, with real Node runners. Every handler
// started here has its own runner job prefix, Consul service name, table, bucket and
// events exchange, so the tests neither see nor disturb a platform running beside them.
// One handler and its pool are shared by most tests; the idle and restart tests start
// their own.

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	fnhook "github.com/fnhook/fnhook/libs"
	"github.com/fnhook/fnhook/libs/blob"
	"github.com/fnhook/fnhook/libs/handlerapi"
	"github.com/fnhook/fnhook/libs/queue"
	"github.com/fnhook/fnhook/libs/runnerapi"
	"github.com/fnhook/fnhook/libs/server"
	"github.com/fnhook/fnhook/libs/store"
	"github.com/fnhook/fnhook/libs/testinfra"
)

// fixture is what the tests of this package share: one table, bucket and exchange, and
// the handlers started on them.
type fixture struct {
	env     *testinfra.Env
	store   *store.Store
	blobs   *blob.Store
	q       *queue.Conn
	names   queue.Names
	secret  string
	nomad   *nomad.Client
	runners *runnerapi.Client
	http    *http.Client

	mu       sync.Mutex
	handlers []*handlerProc
	prefixes []string
	shared   *handlerProc
	cleanups []func()
}

var (
	fixOnce sync.Once
	fix     *fixture
	fixErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if fix != nil {
		fix.teardown()
		if code == 0 {
			fix.removeLogs() // kept when a test failed, for reading
		}
	}
	os.Exit(code)
}

// setup returns the shared fixture, creating it on first use.
func setup(t *testing.T) *fixture {
	t.Helper()
	env := testinfra.Start(t)
	fixOnce.Do(func() { fix, fixErr = newFixture(env) })
	if fixErr != nil {
		t.Fatalf("fixture: %v", fixErr)
	}
	return fix
}

func newFixture(env *testinfra.Env) (*fixture, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	table, bucket := testinfra.Name("handler"), testinfra.Name("handler")
	db, err := store.Open(ctx, env.StoreConfig(table))
	if err != nil {
		return nil, err
	}
	bs, err := blob.Open(ctx, env.BlobConfig(bucket))
	if err != nil {
		return nil, err
	}
	names := testinfra.QueueNames()
	q, err := queue.Dial(context.Background(), env.AMQPURL, names, discardLog())
	if err != nil {
		return nil, err
	}
	nc, err := nomad.NewClient(&nomad.Config{Address: env.NomadAddr, SecretID: env.NomadToken})
	if err != nil {
		return nil, err
	}
	return &fixture{
		env: env, store: db, blobs: bs, q: q, names: names,
		secret: "test-secret-" + server.NewID(), nomad: nc, runners: runnerapi.New(nil),
		http: &http.Client{Timeout: 30 * time.Second},
	}, nil
}

func (f *fixture) teardown() {
	f.mu.Lock()
	handlers := append([]*handlerProc(nil), f.handlers...)
	prefixes := append([]string(nil), f.prefixes...)
	cleanups := f.cleanups
	f.mu.Unlock()
	for _, h := range handlers {
		h.stop()
	}
	var wg sync.WaitGroup
	for _, p := range prefixes {
		wg.Go(func() { f.removeJobs(p) })
	}
	wg.Wait()
	for _, c := range cleanups {
		c()
	}
	ctx := context.Background()
	_ = f.store.DeleteTable(ctx)
	_ = f.blobs.DeleteBucket(ctx)
	_ = f.q.DeleteQueues(f.names.BuildQueue, f.names.BuildDLQ)
	_ = f.q.DeleteExchange(f.names.Exchange)
	f.q.Close()
}

func (f *fixture) removeLogs() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, h := range f.handlers {
		os.Remove(h.logPath)
	}
}

// removeJobs stops every job under prefix, waits until their allocations are complete,
// then purges them (a purge alone would leave the client stopping them unseen).
func (f *fixture) removeJobs(prefix string) {
	stubs, _, err := f.nomad.Jobs().List(&nomad.QueryOptions{Prefix: prefix})
	if err != nil {
		return
	}
	for _, s := range stubs {
		_, _, _ = f.nomad.Jobs().Deregister(s.ID, false, nil)
	}
	deadline := time.Now().Add(45 * time.Second)
	for _, s := range stubs {
		for time.Now().Before(deadline) {
			allocs, _, err := f.nomad.Jobs().Allocations(s.ID, true, nil)
			if err != nil || allLive(allocs) == 0 {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		_, _, _ = f.nomad.Jobs().Deregister(s.ID, true, nil)
	}
}

func allLive(allocs []*nomad.AllocationListStub) int {
	n := 0
	for _, a := range allocs {
		switch a.ClientStatus {
		case nomad.AllocClientStatusComplete, nomad.AllocClientStatusFailed, nomad.AllocClientStatusLost:
		default:
			n++
		}
	}
	return n
}

// handlerProc is one handler running in this process.
type handlerProc struct {
	addr    string
	prefix  string // the runner job prefix given to it
	jobPfx  string // <prefix>-<node8>-
	env     map[string]string
	client  *handlerapi.Client
	cancel  context.CancelFunc
	done    chan error
	logPath string
	once    sync.Once
}

func (h *handlerProc) stop() {
	h.once.Do(func() {
		h.cancel()
		select {
		case <-h.done:
		case <-time.After(20 * time.Second):
		}
	})
}

// startHandler starts a handler with the fixture's servers and its own runner job prefix
// (or the one in over["FNHOOK_RUNNER_JOB_PREFIX"], to restart over the same runners).
func (f *fixture) startHandler(t *testing.T, over map[string]string) *handlerProc {
	t.Helper()
	prefix := over["FNHOOK_RUNNER_JOB_PREFIX"]
	if prefix == "" {
		prefix = testinfra.Name("fnhook-test")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	vars := map[string]string{
		"FNHOOK_SERVICE_NAME":          "handler-test",
		"FNHOOK_LISTEN":                addr,
		"FNHOOK_CONSUL_ADDR":           f.env.ConsulAddr,
		"FNHOOK_AMQP_URL":              f.env.AMQPURL,
		"FNHOOK_DYNAMODB_ENDPOINT":     f.env.DynamoDB,
		"FNHOOK_DYNAMODB_TABLE":        f.store.Table(),
		"FNHOOK_S3_ENDPOINT":           f.env.S3Endpoint,
		"FNHOOK_S3_BUCKET":             f.blobs.Bucket(),
		"FNHOOK_AWS_ACCESS_KEY_ID":     f.env.AccessKey,
		"FNHOOK_AWS_SECRET_ACCESS_KEY": f.env.SecretKey,
		"FNHOOK_HANDLER_SECRET":        f.secret,
		"FNHOOK_NOMAD_ADDR":            f.env.NomadAddr,
		"FNHOOK_NOMAD_TOKEN":           f.env.NomadToken,
		"FNHOOK_MODULES_DIR":           f.env.ModulesDir,
		"FNHOOK_RUNNER_JOB_FILE":       filepath.Join(f.env.Root, "jobs", "runner.nomad.hcl"),
		"FNHOOK_RUNNER_JOB_PREFIX":     prefix,
		"FNHOOK_EVENTS_EXCHANGE":       f.names.Exchange,
		"FNHOOK_LOG_LEVEL":             "debug",
	}
	for k, v := range over {
		vars[k] = v
	}
	logf, err := os.CreateTemp("", "fnhook-handler-test-*.log")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &handlerProc{addr: addr, prefix: prefix, env: vars, client: handlerapi.New(f.secret, nil),
		cancel: cancel, done: make(chan error, 1), logPath: logf.Name()}
	f.mu.Lock()
	f.handlers = append(f.handlers, h)
	if !contains(f.prefixes, prefix) {
		f.prefixes = append(f.prefixes, prefix)
	}
	f.mu.Unlock()
	go func() {
		err := run(ctx, func(k string) string { return vars[k] }, logf)
		logf.Close()
		h.done <- err
	}()
	// Ready once /healthz answers 200 (the pool recovered).
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-h.done:
			t.Fatalf("handler exited at start: %v (log %s)", err, h.logPath)
		default:
		}
		resp, err := f.http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("handler not ready within 30 s (log %s)", h.logPath)
		}
		time.Sleep(50 * time.Millisecond)
	}
	node, err := nodeID(f.nomad)
	if err != nil {
		t.Fatal(err)
	}
	h.jobPfx = prefix + "-" + node[:8] + "-"
	t.Logf("handler %s: prefix %s, log %s", addr, h.jobPfx, h.logPath)
	return h
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func nodeID(c *nomad.Client) (string, error) {
	self, err := c.Agent().Self()
	if err != nil {
		return "", err
	}
	return self.Stats["client"]["node_id"], nil
}

// sharedHandler is the handler most tests use: minIdle 6, up to 24 runners.
func (f *fixture) sharedHandler(t *testing.T) *handlerProc {
	t.Helper()
	f.mu.Lock()
	h := f.shared
	f.mu.Unlock()
	if h != nil {
		return h
	}
	h = f.startHandler(t, map[string]string{"FNHOOK_POOL_MIN_IDLE": "6", "FNHOOK_POOL_MAX_RUNNERS": "24"})
	f.mu.Lock()
	f.shared = h
	f.mu.Unlock()
	return h
}

// runnerJob is a runner job of a handler as Nomad shows it.
type runnerJob struct {
	ID       string
	Address  string
	Status   string // allocation client status
	Submit   time.Time
	Stopped  bool
	AllocID  string
	NodeID   string
	Resource *nomad.AllocatedResources
}

// jobs lists the runner jobs under the handler's prefix with their newest allocation.
func (f *fixture) jobs(t *testing.T, h *handlerProc) []runnerJob {
	t.Helper()
	stubs, _, err := f.nomad.Jobs().List(&nomad.QueryOptions{Prefix: h.jobPfx})
	if err != nil {
		t.Fatal(err)
	}
	var out []runnerJob
	for _, s := range stubs {
		j := runnerJob{ID: s.ID, Submit: time.Unix(0, s.SubmitTime), Stopped: s.Stop}
		allocs, _, err := f.nomad.Jobs().Allocations(s.ID, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, stub := range allocs {
			a, _, err := f.nomad.Allocations().Info(stub.ID, nil)
			if err != nil {
				t.Fatal(err)
			}
			j.Status, j.AllocID, j.NodeID = a.ClientStatus, a.ID, a.NodeID
			if a.AllocatedResources != nil {
				for _, p := range a.AllocatedResources.Shared.Ports {
					if p.Label == "http" {
						host := p.HostIP
						if host == "" {
							host = "127.0.0.1"
						}
						j.Address = net.JoinHostPort(host, strconv.Itoa(p.Value))
					}
				}
			}
		}
		out = append(out, j)
	}
	return out
}

// idleRunners returns the live runner jobs whose runner answers "idle".
func (f *fixture) idleRunners(t *testing.T, h *handlerProc) []runnerJob {
	t.Helper()
	var out []runnerJob
	for _, j := range f.jobs(t, h) {
		if j.Stopped || j.Address == "" {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		hl, err := f.runners.Health(ctx, j.Address)
		cancel()
		if err == nil && hl.State == runnerapi.StateIdle {
			out = append(out, j)
		}
	}
	return out
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// putFunction stores a ready function version (the mgmt service's job in production).
func (f *fixture) putFunction(t *testing.T, tenant, name string, version int, code string, deps map[string]string, conf map[string]string) fnhook.Function {
	t.Helper()
	now := time.Now().UTC()
	fn := fnhook.Function{
		Tenant: tenant, Name: name, Version: version, Code: code,
		Dependencies: deps, ResolvedDependencies: deps, Configuration: conf,
		TimeoutMs: 5000, Status: fnhook.StatusReady, CreatedAt: now, UpdatedAt: now,
	}
	if err := f.store.PutFunction(context.Background(), fn, version-1); err != nil {
		t.Fatalf("put function %s/%s v%d: %v", tenant, name, version, err)
	}
	return fn
}

// call invokes function name through the route, as the gateway would.
func (f *fixture) call(t *testing.T, route fnhook.Route, name, body string, hdr map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, runnerapi.RunURL(route.Address, name, "", ""), strings.NewReader(body))
	runnerapi.Authorize(req, route.Token)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := f.http.Do(req)
	if err != nil {
		t.Fatalf("call %s at %s: %v", name, route.Address, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (f *fixture) resolve(t *testing.T, h *handlerProc, tenant, name string) fnhook.Route {
	t.Helper()
	route, err := h.client.Resolve(context.Background(), h.addr, tenant, name)
	if err != nil {
		t.Fatalf("resolve %s/%s: %v", tenant, name, err)
	}
	return route
}

func tenantName() string { return testinfra.Name("t") }

// metric returns the value of a metric line of the handler's /metrics (name with labels).
func (f *fixture) metric(t *testing.T, h *handlerProc, name string) float64 {
	t.Helper()
	resp, err := f.http.Get("http://" + h.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+" ") {
			v, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, name)), 64)
			return v
		}
	}
	return -1
}

// TestPoolReachesMinIdle: the pool fills to minIdle with runners that answer and are pinned
// to this node.
func TestPoolReachesMinIdle(t *testing.T) {
	f := setup(t)
	start := time.Now()
	h := f.sharedHandler(t)
	waitFor(t, "6 idle runners (minIdle)", 90*time.Second, func() bool { return len(f.idleRunners(t, h)) >= 6 })
	t.Logf("pool of 6 ready %s after the handler started", time.Since(start).Round(time.Millisecond))
	node, _ := nodeID(f.nomad)
	for _, j := range f.idleRunners(t, h) {
		if j.NodeID != node {
			t.Fatalf("runner %s on node %s, want %s", j.ID, j.NodeID, node)
		}
		if !strings.HasPrefix(j.Address, "127.0.0.1:") {
			t.Fatalf("runner %s mapped on %s, want 127.0.0.1", j.ID, j.Address)
		}
	}
	sum := f.metric(t, h, "fnhook_handler_runner_ready_seconds_sum")
	count := f.metric(t, h, "fnhook_handler_runner_ready_seconds_count")
	if count > 0 {
		t.Logf("MEASURE runner ready (register -> answering): mean %.2fs over %v runners", sum/count, count)
	}
}

// TestResolveFromPool: a new tenant is answered by a runner that existed before the
// resolve; the route works with its token; the next resolve is warm.
func TestResolveFromPool(t *testing.T) {
	f := setup(t)
	h := f.sharedHandler(t)
	// A full pool: every runner that will take the next tenant exists and answers now.
	waitFor(t, "6 idle runners", 90*time.Second, func() bool { return len(f.idleRunners(t, h)) >= 6 })
	before := map[string]runnerJob{}
	for _, j := range f.idleRunners(t, h) {
		before[j.Address] = j
	}
	tenant := tenantName()
	f.putFunction(t, tenant, "hello", 1, `module.exports = async (ctx) => ({ body: { hi: ctx.tenant, v: 1, conf: ctx.configuration.GREETING } });`,
		nil, map[string]string{"GREETING": "hey"})
	start := time.Now()
	route := f.resolve(t, h, tenant, "hello")
	cold := time.Since(start)
	j, ok := before[route.Address]
	if !ok {
		t.Fatalf("route %s is not one of the idle runners that existed before the resolve (%v)", route.Address, before)
	}
	if !route.Cold || route.Version != 1 || route.Token != runnerapi.Token(f.secret, j.ID) {
		t.Fatalf("route = %+v, want cold, version 1 and the token of %s", route, j.ID)
	}
	if j.Submit.After(start) {
		t.Fatalf("job %s was submitted after the resolve began", j.ID)
	}
	status, body := f.call(t, route, "hello", "{}", nil)
	if status != 200 || !strings.Contains(body, tenant) || !strings.Contains(body, "hey") {
		t.Fatalf("call = %d %s", status, body)
	}
	// Warm: same runner, not cold, fast.
	var warm time.Duration
	for range 20 {
		s := time.Now()
		again := f.resolve(t, h, tenant, "hello")
		warm += time.Since(s)
		if again.Address != route.Address || again.Cold {
			t.Fatalf("second resolve = %+v, want warm on %s", again, route.Address)
		}
	}
	t.Logf("MEASURE cold resolve (assign + load, no modules): %s; warm resolve mean of 20: %s", cold, warm/20)

	// A wrong token opens nothing; an idle runner cannot be assigned without its token.
	if s, _ := f.call(t, fnhook.Route{Address: route.Address, Token: "wrong"}, "hello", "{}", nil); s != 401 {
		t.Fatalf("call with a wrong token = %d, want 401", s)
	}
	// Errors of the resolve API.
	_, err := h.client.Resolve(context.Background(), h.addr, tenant, "missing")
	if fnhook.StatusOf(err) != 404 {
		t.Fatalf("resolve of a missing function = %v, want 404", err)
	}
	fb := fnhook.Function{Tenant: tenant, Name: "building", Version: 1, Code: "x", Status: fnhook.StatusBuilding, Pending: []string{"left-pad@1.3.0"}}
	ff := fnhook.Function{Tenant: tenant, Name: "failed", Version: 1, Code: "x", Status: fnhook.StatusFailed, Error: "npm ERR! 404 nope@9.9.9"}
	for _, fn := range []fnhook.Function{fb, ff} {
		if err := f.store.PutFunction(context.Background(), fn, 0); err != nil {
			t.Fatal(err)
		}
	}
	_, err = h.client.Resolve(context.Background(), h.addr, tenant, "building")
	if fnhook.ErrorCode(err) != fnhook.CodeFunctionBuilding || fnhook.StatusOf(err) != 503 {
		t.Fatalf("resolve of a building function = %v", err)
	}
	_, err = h.client.Resolve(context.Background(), h.addr, tenant, "failed")
	if fnhook.ErrorCode(err) != fnhook.CodeFunctionFailed || fnhook.StatusOf(err) != 424 || !strings.Contains(fnhook.ErrorMessage(err), "nope@9.9.9") {
		t.Fatalf("resolve of a failed function = %v", err)
	}
	_, err = handlerapi.New("not-the-secret-at-all", nil).Resolve(context.Background(), h.addr, tenant, "hello")
	if fnhook.StatusOf(err) != 401 {
		t.Fatalf("resolve with a wrong secret = %v, want 401", err)
	}
	// Code that does not compile answers function_failed with the line.
	f.putFunction(t, tenant, "broken", 1, "module.exports = async (ctx) => { return ;; }}", nil, nil)
	_, err = h.client.Resolve(context.Background(), h.addr, tenant, "broken")
	if fnhook.ErrorCode(err) != fnhook.CodeFunctionFailed || !strings.Contains(fnhook.ErrorMessage(err), "line") {
		t.Fatalf("resolve of code that does not compile = %v", err)
	}
	// The tenant kept its runner.
	if again := f.resolve(t, h, tenant, "hello"); again.Address != route.Address {
		t.Fatalf("after a compile error the tenant moved to %s", again.Address)
	}
}

// TestColdResolveLatency measures, before the parallel tests load the machine, a cold
// resolve that unpacks modules, cold resolves with the modules already on the node, and
// warm resolves. It asserts only that each answers a working route; the figures are logs.
func TestColdResolveLatency(t *testing.T) {
	f := setup(t)
	h := f.sharedHandler(t)
	id := server.NewID()[:10]
	mod, dep := "fnhook-test-lat-"+id, "fnhook-test-latdep-"+id
	f.putModule(t, mod, "1.0.0", moduleTarball(t, mod, dep, "hi"))
	deps := map[string]string{mod: "1.0.0"}
	code := fmt.Sprintf(`const m = require(%q); module.exports = async () => m("there");`, mod)
	var tenants []string
	defer func() {
		for _, tn := range tenants {
			_ = f.q.PublishEvent(context.Background(), fnhook.EventTenantDeleted, fnhook.TenantDeleted{Tenant: tn})
		}
	}()
	for i := range 4 {
		waitFor(t, "6 idle runners", 90*time.Second, func() bool { return len(f.idleRunners(t, h)) >= 6 })
		tn := tenantName()
		tenants = append(tenants, tn)
		f.putFunction(t, tn, "fn", 1, code, deps, nil)
		start := time.Now()
		route := f.resolve(t, h, tn, "fn")
		took := time.Since(start)
		what := "modules already on the node"
		if i == 0 {
			what = "module downloaded and unpacked"
		}
		t.Logf("MEASURE cold resolve (%s): %s", what, took.Round(10*time.Microsecond))
		if s, b := f.call(t, route, "fn", "", nil); s != 200 || b != "hi there!" {
			t.Fatalf("call = %d %q", s, b)
		}
	}
	var lat []time.Duration
	for range 200 {
		start := time.Now()
		f.resolve(t, h, tenants[1], "fn")
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	t.Logf("MEASURE warm resolve over 200: p50 %s p90 %s p99 %s", lat[100].Round(10*time.Microsecond),
		lat[180].Round(10*time.Microsecond), lat[198].Round(10*time.Microsecond))
}

// TestConcurrentResolvesOneRunner: 20 resolves at once for a new tenant assign one runner
// and load once.
func TestConcurrentResolvesOneRunner(t *testing.T) {
	t.Parallel()
	f := setup(t)
	h := f.sharedHandler(t)
	tenant := tenantName()
	f.putFunction(t, tenant, "hello", 1, `module.exports = async () => "one";`, nil, nil)
	var wg sync.WaitGroup
	routes := make([]fnhook.Route, 20)
	errs := make([]error, 20)
	for i := range 20 {
		wg.Go(func() { routes[i], errs[i] = h.client.Resolve(context.Background(), h.addr, tenant, "hello") })
	}
	wg.Wait()
	for i := range 20 {
		if errs[i] != nil {
			t.Fatalf("resolve %d: %v", i, errs[i])
		}
		if routes[i].Address != routes[0].Address || routes[i].Token != routes[0].Token {
			t.Fatalf("resolve %d went to %s, resolve 0 to %s", i, routes[i].Address, routes[0].Address)
		}
	}
	// Exactly one runner of this handler serves the tenant.
	n := 0
	for _, j := range f.jobs(t, h) {
		if j.Stopped || j.Address == "" {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := f.runners.State(ctx, runnerapi.Runner{Address: j.Address, Token: runnerapi.Token(f.secret, j.ID)})
		cancel()
		if err == nil && st.Tenant == tenant {
			n++
			if st.Functions["hello"] != 1 {
				t.Fatalf("runner state %+v, want hello v1", st)
			}
		}
	}
	if n != 1 {
		t.Fatalf("%d runners serve %s, want 1", n, tenant)
	}
	if s, b := f.call(t, routes[0], "hello", "", nil); s != 200 || b != "one" {
		t.Fatalf("call = %d %q", s, b)
	}
}

// moduleTarball builds the gzip tarball of a module closure: node_modules/<name> that
// requires node_modules/<dep> beside it.
func moduleTarball(t *testing.T, name, dep, greeting string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	add := func(path, body string) {
		if err := tw.WriteHeader(&tar.Header{Name: path, Mode: 0o600, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	tw.WriteHeader(&tar.Header{Name: "node_modules/", Mode: 0o700, Typeflag: tar.TypeDir})
	add("node_modules/"+name+"/package.json", fmt.Sprintf(`{"name":%q,"version":"1.0.0","main":"index.js"}`, name))
	add("node_modules/"+name+"/index.js", fmt.Sprintf(`const d = require(%q); module.exports = (who) => %q + " " + who + d;`, dep, greeting))
	add("node_modules/"+dep+"/package.json", fmt.Sprintf(`{"name":%q,"version":"2.0.0"}`, dep))
	add("node_modules/"+dep+"/index.js", `module.exports = "!";`)
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

// putModule uploads a module's tarball and records it ready, as the builder would.
func (f *fixture) putModule(t *testing.T, name, version string, data []byte) {
	t.Helper()
	ctx := context.Background()
	if err := f.blobs.Put(ctx, fnhook.ModuleObjectKey(name, version), bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	m := fnhook.Module{Name: name, Version: version, Status: fnhook.ModuleReady, SHA256: hex.EncodeToString(sum[:]),
		Size: int64(len(data)), BuiltAt: time.Now().UTC()}
	if err := f.store.FinishModule(ctx, m); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(f.env.ModulesDir, filepath.FromSlash(name)+"@"+version)
	f.mu.Lock()
	f.cleanups = append(f.cleanups, func() {
		os.RemoveAll(dir)
		if strings.HasPrefix(name, "@") {
			os.Remove(filepath.Dir(dir)) // the scope's folder, once empty
		}
	})
	f.mu.Unlock()
}

// TestFunctionWithModules: functions using a plain and a scoped module (each a closure
// with its own dependency) run through the links into the node's cache; the module is
// unpacked once; a second tenant's cold resolve finds it there.
func TestFunctionWithModules(t *testing.T) {
	t.Parallel()
	f := setup(t)
	h := f.sharedHandler(t)
	id := server.NewID()[:10]
	plain, scoped := "fnhook-test-mod-"+id, "@fnhook-test/scoped-"+id
	dep := "fnhook-test-dep-" + id
	f.putModule(t, plain, "1.0.0", moduleTarball(t, plain, dep, "hello"))
	f.putModule(t, scoped, "1.2.3", moduleTarball(t, scoped, dep, "howdy"))
	deps := map[string]string{plain: "1.0.0", scoped: "1.2.3"}
	code := fmt.Sprintf(`const a = require(%q); const b = require(%q);
module.exports = async (ctx) => a(ctx.tenant.slice(0, 1)) + "|" + b("x");`, plain, scoped)
	esm := fmt.Sprintf(`import a from %q; export default async () => a("esm");`, plain)

	unpacksBefore := f.metric(t, h, `fnhook_handler_module_unpacks_total{outcome="ok"}`)
	t1 := tenantName()
	f.putFunction(t, t1, "mods", 1, code, deps, nil)
	f.putFunction(t, t1, "esm", 1, esm, map[string]string{plain: "1.0.0"}, nil)
	start := time.Now()
	route := f.resolve(t, h, t1, "mods")
	t.Logf("MEASURE cold resolve with 2 modules to download and unpack: %s", time.Since(start))
	if s, b := f.call(t, route, "mods", "", nil); s != 200 || b != "hello t!|howdy x!" {
		t.Fatalf("call = %d %q", s, b)
	}
	if s, b := f.call(t, f.resolve(t, h, t1, "esm"), "esm", "", nil); s != 200 || b != "hello esm!" {
		t.Fatalf("esm call = %d %q", s, b)
	}
	// The cache on the host: readable by all, with the closure's dependency beside it.
	fi, err := os.Stat(filepath.Join(f.env.ModulesDir, "@fnhook-test", "scoped-"+id+"@1.2.3", "node_modules", dep, "index.js"))
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("cached dependency file: %v, %v", fi, err)
	}
	// A second tenant with the modules already on the node.
	t2 := tenantName()
	f.putFunction(t, t2, "mods", 1, code, deps, nil)
	start = time.Now()
	route2 := f.resolve(t, h, t2, "mods")
	t.Logf("MEASURE cold resolve with 2 modules already on the node: %s", time.Since(start))
	if route2.Address == route.Address {
		t.Fatal("two tenants share a runner")
	}
	if s, b := f.call(t, route2, "mods", "", nil); s != 200 || b != "hello t!|howdy x!" {
		t.Fatalf("second tenant call = %d %q", s, b)
	}
	if n := f.metric(t, h, `fnhook_handler_module_unpacks_total{outcome="ok"}`) - max(unpacksBefore, 0); n < 2 {
		t.Fatalf("%v unpacks counted, want the 2 modules", n)
	}
	// A module whose tarball does not match its record is refused.
	bad := "fnhook-test-bad-" + id
	f.putModule(t, bad, "1.0.0", moduleTarball(t, bad, dep, "x"))
	other := moduleTarball(t, bad, dep, "tampered")
	if err := f.blobs.Put(context.Background(), fnhook.ModuleObjectKey(bad, "1.0.0"), bytes.NewReader(other), int64(len(other))); err != nil {
		t.Fatal(err)
	}
	f.putFunction(t, t2, "bad", 1, fmt.Sprintf(`module.exports = () => require(%q)("y");`, bad), map[string]string{bad: "1.0.0"}, nil)
	_, err = h.client.Resolve(context.Background(), h.addr, t2, "bad")
	if fnhook.StatusOf(err) != 503 {
		t.Fatalf("resolve with a tampered module = %v, want 503", err)
	}
	if _, err := os.Stat(filepath.Join(f.env.ModulesDir, bad+"@1.0.0")); err == nil {
		t.Fatal("a tampered module was put into the cache")
	}
}

// TestUpdateLoadedBeforeNextCall: after a new version and its function.changed event, the
// tenant's runner has the new version before any further resolve or call.
func TestUpdateLoadedBeforeNextCall(t *testing.T) {
	t.Parallel()
	f := setup(t)
	h := f.sharedHandler(t)
	tenant := tenantName()
	f.putFunction(t, tenant, "fn", 1, `module.exports = async () => "v1";`, nil, nil)
	route := f.resolve(t, h, tenant, "fn")
	if s, b := f.call(t, route, "fn", "", nil); s != 200 || b != "v1" {
		t.Fatalf("call v1 = %d %q", s, b)
	}
	f.putFunction(t, tenant, "fn", 2, `module.exports = async () => "v2";`, nil, nil)
	sent := time.Now()
	if err := f.q.PublishEvent(context.Background(), fnhook.EventFunctionChanged, fnhook.FunctionChanged{Tenant: tenant, Function: "fn", Version: 2}); err != nil {
		t.Fatal(err)
	}
	// The runner itself shows the new version, with no resolve in between.
	api := runnerapi.Runner{Address: route.Address, Token: route.Token}
	waitFor(t, "version 2 loaded by the event", 5*time.Second, func() bool {
		st, err := f.runners.State(context.Background(), api)
		return err == nil && st.Functions["fn"] == 2
	})
	t.Logf("MEASURE function.changed -> new version loaded: %s", time.Since(sent))
	if s, b := f.call(t, route, "fn", "", map[string]string{runnerapi.HeaderMinVersion: "2"}); s != 200 || b != "v2" {
		t.Fatalf("call after the update = %d %q", s, b)
	}
	if again := f.resolve(t, h, tenant, "fn"); again.Cold || again.Version != 2 || again.Address != route.Address {
		t.Fatalf("resolve after the update = %+v, want warm v2 on the same runner", again)
	}
	// Delete: unloaded at once.
	if err := f.store.DeleteFunction(context.Background(), tenant, "fn", 2); err != nil {
		t.Fatal(err)
	}
	if err := f.q.PublishEvent(context.Background(), fnhook.EventFunctionChanged, fnhook.FunctionChanged{Tenant: tenant, Function: "fn", Version: 3, Deleted: true}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "function unloaded", 5*time.Second, func() bool {
		s, _ := f.call(t, route, "fn", "", nil)
		return s == 404
	})
	// Tenant deleted: its runner ends.
	if err := f.q.PublishEvent(context.Background(), fnhook.EventTenantDeleted, fnhook.TenantDeleted{Tenant: tenant}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deleted tenant's runner stopped", 15*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		_, err := f.runners.Health(ctx, route.Address)
		return err != nil
	})
}

// TestStoppedRunnerReplaced: a runner whose job is stopped from outside is forgotten and
// the next resolve assigns a fresh one, which works.
func TestStoppedRunnerReplaced(t *testing.T) {
	t.Parallel()
	f := setup(t)
	h := f.sharedHandler(t)
	tenant := tenantName()
	f.putFunction(t, tenant, "fn", 1, `module.exports = async () => "alive";`, nil, nil)
	route := f.resolve(t, h, tenant, "fn")
	var jobID string
	for _, j := range f.jobs(t, h) {
		if j.Address == route.Address && !j.Stopped {
			jobID = j.ID
		}
	}
	if jobID == "" {
		t.Fatalf("no job for %s", route.Address)
	}
	if _, _, err := f.nomad.Jobs().Deregister(jobID, false, nil); err != nil {
		t.Fatal(err)
	}
	var fresh fnhook.Route
	waitFor(t, "a resolve to a fresh runner", 20*time.Second, func() bool {
		r, err := h.client.Resolve(context.Background(), h.addr, tenant, "fn")
		if err != nil {
			t.Logf("resolve while replacing: %v", err)
			return false
		}
		fresh = r
		return r.Address != route.Address
	})
	if !fresh.Cold || fresh.Token == route.Token {
		t.Fatalf("fresh route = %+v, want cold with another token", fresh)
	}
	if s, b := f.call(t, fresh, "fn", "", nil); s != 200 || b != "alive" {
		t.Fatalf("call on the fresh runner = %d %q", s, b)
	}
}

// TestRefreshAfterLostFunction: a resolve with refresh set re-reads the runner's state,
// so a function the runner no longer holds is loaded again.
func TestRefreshAfterLostFunction(t *testing.T) {
	t.Parallel()
	f := setup(t)
	h := f.sharedHandler(t)
	tenant := tenantName()
	f.putFunction(t, tenant, "fn", 1, `module.exports = async () => "here";`, nil, nil)
	route := f.resolve(t, h, tenant, "fn")
	// Unload behind the handler's back (as the runner does with a function that crashes it).
	if err := f.runners.Unload(context.Background(), runnerapi.Runner{Address: route.Address, Token: route.Token}, "fn"); err != nil {
		t.Fatal(err)
	}
	if s, _ := f.call(t, route, "fn", "", nil); s != 404 {
		t.Fatalf("call after unload = %d, want 404", s)
	}
	again, err := h.client.Do(context.Background(), h.addr, handlerapi.Request{Tenant: tenant, Function: "fn", Refresh: true})
	if err != nil || again.Address != route.Address || !again.Cold {
		t.Fatalf("refresh resolve = %+v, %v", again, err)
	}
	if s, b := f.call(t, again, "fn", "", nil); s != 200 || b != "here" {
		t.Fatalf("call after refresh = %d %q", s, b)
	}
}

// TestIdleRecycling: a tenant's runner idle past the timeout is ended, the pool refills,
// and the tenant's next resolve gets a fresh runner.
func TestIdleRecycling(t *testing.T) {
	t.Parallel()
	f := setup(t)
	h := f.startHandler(t, map[string]string{"FNHOOK_POOL_MIN_IDLE": "1", "FNHOOK_POOL_MAX_RUNNERS": "4", "FNHOOK_IDLE_TIMEOUT": "3s"})
	waitFor(t, "1 idle runner", 60*time.Second, func() bool { return len(f.idleRunners(t, h)) >= 1 })
	tenant := tenantName()
	f.putFunction(t, tenant, "fn", 1, `module.exports = async () => "ok";`, nil, nil)
	route := f.resolve(t, h, tenant, "fn")
	waitFor(t, "the idle tenant's runner to end", 20*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		_, err := f.runners.Health(ctx, route.Address)
		return err != nil
	})
	waitFor(t, "the pool to refill", 60*time.Second, func() bool { return len(f.idleRunners(t, h)) >= 1 })
	again := f.resolve(t, h, tenant, "fn")
	if again.Address == route.Address || !again.Cold {
		t.Fatalf("resolve after recycling = %+v, want a fresh runner", again)
	}
	if s, b := f.call(t, again, "fn", "", nil); s != 200 || b != "ok" {
		t.Fatalf("call = %d %q", s, b)
	}
}

// TestRestartKeepsAssignments: a new handler over the same node and job prefix recovers
// the runners: the tenant keeps its runner and its loaded version (warm).
func TestRestartKeepsAssignments(t *testing.T) {
	t.Parallel()
	f := setup(t)
	over := map[string]string{"FNHOOK_POOL_MIN_IDLE": "1", "FNHOOK_POOL_MAX_RUNNERS": "4"}
	h1 := f.startHandler(t, over)
	waitFor(t, "1 idle runner", 60*time.Second, func() bool { return len(f.idleRunners(t, h1)) >= 1 })
	tenant := tenantName()
	f.putFunction(t, tenant, "fn", 1, `module.exports = async () => "kept";`, nil, nil)
	route := f.resolve(t, h1, tenant, "fn")
	waitFor(t, "refill", 60*time.Second, func() bool { return len(f.idleRunners(t, h1)) >= 1 })
	idleBefore := f.idleRunners(t, h1)
	h1.stop()
	over["FNHOOK_RUNNER_JOB_PREFIX"] = h1.prefix
	h2 := f.startHandler(t, over)
	again := f.resolve(t, h2, tenant, "fn")
	if again.Address != route.Address || again.Token != route.Token || again.Cold {
		t.Fatalf("after restart: %+v, want warm on %s", again, route.Address)
	}
	if s, b := f.call(t, again, "fn", "", nil); s != 200 || b != "kept" {
		t.Fatalf("call = %d %q", s, b)
	}
	// Idle runners rejoined the pool: a new tenant is served by one of them.
	other := tenantName()
	f.putFunction(t, other, "fn", 1, `module.exports = async () => "new";`, nil, nil)
	r2 := f.resolve(t, h2, other, "fn")
	found := false
	for _, j := range idleBefore {
		found = found || j.Address == r2.Address
	}
	if !found {
		t.Fatalf("new tenant got %s, not one of the recovered idle runners %v", r2.Address, idleBefore)
	}
	// No runner job was stopped by the restart.
	for _, j := range f.jobs(t, h2) {
		if (j.Address == route.Address || j.Address == r2.Address) && j.Stopped {
			t.Fatalf("job %s was stopped by the restart", j.ID)
		}
	}
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }
