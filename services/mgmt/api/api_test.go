package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	fnhook "github.com/fnhook/fnhook/libs"
	"github.com/fnhook/fnhook/libs/queue"
)

const helloCJS = "module.exports = async (ctx) => ({ body: 'hi' });\n"
const dayjsESM = "import dayjs from 'dayjs';\nexport default async () => ({ body: dayjs().format() });\n"

// TestFunctionLifecycle: a function with a dependency builds, turns ready on module.ready,
// a second one with the same dependency is ready at once, and events tell the handlers.
func TestFunctionLifecycle(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	in := b.start(t)
	builds := b.collect(t, queue.QueueSpec{Name: b.names.BuildQueue})
	events := b.events(t, fnhook.EventFunctionChanged, fnhook.EventTenantDeleted)
	tenant, token, _ := in.tenantWithToken(t, nil)
	base := "/v1/tenants/" + tenant + "/functions/"

	r := must(t, in.call(t, "PUT", base+"first", token, map[string]any{
		"code": dayjsESM, "dependencies": map[string]string{"dayjs": "^1.11.0"},
		"configuration": map[string]string{"API_KEY": "s3cret"}, "timeoutMs": 5000,
	}), http.StatusCreated)
	if r.str("status") != fnhook.StatusBuilding || r.num("version") != 1 {
		t.Fatalf("first PUT: %s", r.raw)
	}
	version, _ := r.obj("resolvedDependencies")["dayjs"].(string)
	if !regexp.MustCompile(`^1\.(1[1-9]|[2-9]\d)\.\d+$`).MatchString(version) {
		t.Fatalf("dayjs resolved to %q, want an exact 1.x >= 1.11: %s", version, r.raw)
	}
	if p, _ := r.body["pending"].([]any); len(p) != 1 || p[0] != "dayjs@"+version {
		t.Fatalf("pending = %v, want [dayjs@%s]", r.body["pending"], version)
	}
	if _, has := r.body["code"]; has {
		t.Errorf("PUT answer carries the code")
	}
	if r.header.Get("ETag") != `"1"` {
		t.Errorf("ETag = %q", r.header.Get("ETag"))
	}
	msg := builds.waitFor(t, 10*time.Second, "build request", func(d queue.Delivery) bool { return buildRequest(d).Name == "dayjs" })
	if got := buildRequest(msg); got.Version != version {
		t.Fatalf("build request %+v, want dayjs@%s", got, version)
	}
	events.waitFor(t, 10*time.Second, "function.changed v1", func(d queue.Delivery) bool {
		var ev fnhook.FunctionChanged
		return json.Unmarshal(d.Body, &ev) == nil && ev == fnhook.FunctionChanged{Tenant: tenant, Function: "first", Version: 1}
	})

	// The builder's part: record the module, then announce it.
	ctx := context.Background()
	if err := b.store.FinishModule(ctx, fnhook.Module{Name: "dayjs", Version: version, Status: fnhook.ModuleReady, SHA256: "x", Size: 1}); err != nil {
		t.Fatal(err)
	}
	if err := b.queue.PublishEvent(ctx, fnhook.EventModuleReady, fnhook.ModuleEvent{Name: "dayjs", Version: version}); err != nil {
		t.Fatal(err)
	}
	got := in.waitStatus(t, tenant, "first", token, fnhook.StatusReady, 15*time.Second)
	if got.num("version") != 1 || got.str("code") != dayjsESM || got.body["pending"] != nil {
		t.Errorf("ready function: %s", got.raw)
	}
	if cfg := got.obj("configuration"); cfg["API_KEY"] != "***" || strings.Contains(string(got.raw), "s3cret") {
		t.Errorf("configuration not redacted: %s", got.raw)
	}
	// The wait is forgotten just after the status is stored.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ws, err := b.store.Waiters(ctx, "dayjs", version)
		if err == nil && len(ws) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiters left after ready: %v %v", ws, err)
		}
	}

	// Same dependency again: ready at once, nothing queued.
	before := builds.count(func(queue.Delivery) bool { return true })
	r = must(t, in.call(t, "PUT", base+"second", token, map[string]any{
		"code": helloCJS, "dependencies": map[string]string{"dayjs": "^1.11.0"},
	}), http.StatusCreated)
	if r.str("status") != fnhook.StatusReady || r.obj("resolvedDependencies")["dayjs"] != version {
		t.Fatalf("second PUT: %s", r.raw)
	}
	// An update answers 200 and bumps the version.
	r = must(t, in.call(t, "PUT", base+"second", token, map[string]any{"code": helloCJS + "// v2\n"}), http.StatusOK)
	if r.num("version") != 2 || r.str("status") != fnhook.StatusReady {
		t.Fatalf("update: %s", r.raw)
	}
	time.Sleep(time.Second)
	if n := builds.count(func(queue.Delivery) bool { return true }); n != before {
		t.Errorf("%d build requests after a PUT whose modules were built", n-before)
	}

	// Pagination over a few more functions (no dependencies: ready at once).
	for _, n := range []string{"third", "fourth", "fifth"} {
		must(t, in.call(t, "PUT", base+n, token, map[string]any{"code": helloCJS}), http.StatusCreated)
	}
	var names []string
	after := ""
	for page := 0; page < 5; page++ {
		r = must(t, in.call(t, "GET", "/v1/tenants/"+tenant+"/functions?limit=2&after="+after, token, nil), http.StatusOK)
		fns, _ := r.body["functions"].([]any)
		if len(fns) > 2 {
			t.Fatalf("page of %d with limit 2", len(fns))
		}
		for _, f := range fns {
			m := f.(map[string]any)
			if _, has := m["code"]; has {
				t.Errorf("list carries code: %v", m)
			}
			names = append(names, m["name"].(string))
		}
		after = r.str("next")
		if after == "" {
			break
		}
	}
	if strings.Join(names, ",") != "fifth,first,fourth,second,third" {
		t.Errorf("listed %v", names)
	}

	// Delete, then re-create: the version goes on from the deleted one.
	must(t, in.call(t, "DELETE", base+"second", token, nil), http.StatusNoContent)
	must(t, in.call(t, "GET", base+"second", token, nil), http.StatusNotFound)
	events.waitFor(t, 10*time.Second, "function.changed deleted", func(d queue.Delivery) bool {
		var ev fnhook.FunctionChanged
		return json.Unmarshal(d.Body, &ev) == nil && ev == fnhook.FunctionChanged{Tenant: tenant, Function: "second", Version: 2, Deleted: true}
	})
	r = must(t, in.call(t, "PUT", base+"second", token, map[string]any{"code": helloCJS}), http.StatusCreated)
	if r.num("version") != 3 {
		t.Errorf("re-created function has version %d, want 3 (after deleted version 2)", r.num("version"))
	}

	// Tenant delete removes functions and tokens, and tells the handlers.
	must(t, in.call(t, "DELETE", "/v1/tenants/"+tenant, in.admin, nil), http.StatusNoContent)
	events.waitFor(t, 10*time.Second, "tenant.deleted", func(d queue.Delivery) bool {
		return d.RoutingKey == fnhook.EventTenantDeleted && strings.Contains(string(d.Body), `"`+tenant+`"`)
	})
	must(t, in.call(t, "GET", "/v1/tenants/"+tenant, in.admin, nil), http.StatusNotFound)
	must(t, in.call(t, "GET", base+"first", token, nil), http.StatusUnauthorized)
	if _, err := b.store.GetFunction(ctx, tenant, "first"); fnhook.ErrorCode(err) != fnhook.CodeNotFound {
		t.Errorf("function survived its tenant: %v", err)
	}
}

// TestModuleFailure: a failed module fails its waiting functions, and later ones at once.
func TestModuleFailure(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	in := b.start(t)
	tenant, token, _ := in.tenantWithToken(t, nil)
	base := "/v1/tenants/" + tenant + "/functions/"
	body := map[string]any{"code": helloCJS, "dependencies": map[string]string{"ms": "2.1.3"}}
	r := must(t, in.call(t, "PUT", base+"a", token, body), http.StatusCreated)
	if r.str("status") != fnhook.StatusBuilding {
		t.Fatalf("PUT: %s", r.raw)
	}
	ctx := context.Background()
	why := "npm error code E404 (test)"
	if err := b.store.FinishModule(ctx, fnhook.Module{Name: "ms", Version: "2.1.3", Status: fnhook.ModuleFailed, Error: why}); err != nil {
		t.Fatal(err)
	}
	if err := b.queue.PublishEvent(ctx, fnhook.EventModuleFailed, fnhook.ModuleEvent{Name: "ms", Version: "2.1.3", Error: why}); err != nil {
		t.Fatal(err)
	}
	got := in.waitStatus(t, tenant, "a", token, fnhook.StatusFailed, 15*time.Second)
	if !strings.Contains(got.str("error"), "ms@2.1.3") || !strings.Contains(got.str("error"), why) {
		t.Errorf("failed function's error: %q", got.str("error"))
	}
	r = must(t, in.call(t, "PUT", base+"b", token, body), http.StatusCreated)
	if r.str("status") != fnhook.StatusFailed || !strings.Contains(r.str("error"), why) {
		t.Errorf("second PUT on a failed module: %s", r.raw)
	}
}

// TestConvergence: without any event, a restart's convergence pass finds built modules and
// asks again for modules nobody has recorded.
func TestConvergence(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	in := b.start(t)
	builds := b.collect(t, queue.QueueSpec{Name: b.names.BuildQueue})
	tenant, token, _ := in.tenantWithToken(t, nil)
	base := "/v1/tenants/" + tenant + "/functions/"
	r := must(t, in.call(t, "PUT", base+"a", token, map[string]any{"code": helloCJS,
		"dependencies": map[string]string{"ms": "2.1.3", "is-number": "7.0.0"}}), http.StatusCreated)
	if r.str("status") != fnhook.StatusBuilding {
		t.Fatalf("PUT: %s", r.raw)
	}
	isNumber := func(d queue.Delivery) bool {
		return buildRequest(d) == fnhook.BuildRequest{Name: "is-number", Version: "7.0.0"}
	}
	builds.waitFor(t, 10*time.Second, "first build request", isNumber)
	ctx := context.Background()
	if err := b.store.FinishModule(ctx, fnhook.Module{Name: "ms", Version: "2.1.3", Status: fnhook.ModuleReady}); err != nil {
		t.Fatal(err)
	}
	// A second instance starting up converges (its Run passes once at start); call it
	// directly to know when the pass is over.
	if err := in.tracker.Converge(ctx); err != nil {
		t.Fatal(err)
	}
	r = must(t, in.call(t, "GET", base+"a", token, nil), http.StatusOK)
	if p, _ := r.body["pending"].([]any); r.str("status") != fnhook.StatusBuilding || len(p) != 1 || p[0] != "is-number@7.0.0" {
		t.Fatalf("after convergence: %s", r.raw)
	}
	deadline := time.Now().Add(10 * time.Second)
	for builds.count(isNumber) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("convergence did not ask again for a module without a record")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := b.store.FinishModule(ctx, fnhook.Module{Name: "is-number", Version: "7.0.0", Status: fnhook.ModuleReady}); err != nil {
		t.Fatal(err)
	}
	if err := in.tracker.Converge(ctx); err != nil {
		t.Fatal(err)
	}
	must(t, in.call(t, "GET", base+"a", token, nil), http.StatusOK)
	in.waitStatus(t, tenant, "a", token, fnhook.StatusReady, 5*time.Second)
}

// TestAuth: who may do what.
func TestAuth(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	in := b.start(t)
	tenant, token, tokenID := in.tenantWithToken(t, nil)
	other, otherToken, _ := in.tenantWithToken(t, nil)
	fn := "/v1/tenants/" + tenant + "/functions/f"
	must(t, in.call(t, "PUT", fn, token, map[string]any{"code": helloCJS}), http.StatusCreated)

	wrongSecret := token[:len(token)-2] + "xx"
	if strings.HasSuffix(token, "xx") {
		wrongSecret = token[:len(token)-2] + "yy"
	}
	cases := []struct {
		name, method, path, auth string
		status                   int
		code                     string
	}{
		{"no header", "GET", fn, "", 401, fnhook.CodeUnauthorized},
		{"basic scheme", "GET", fn, "Basic " + testAdminKey, 401, fnhook.CodeUnauthorized},
		{"garbage token", "GET", fn, "Bearer nonsense", 401, fnhook.CodeUnauthorized},
		{"wrong secret", "GET", fn, "Bearer " + wrongSecret, 401, fnhook.CodeUnauthorized},
		{"admin key prefix", "GET", fn, "Bearer " + testAdminKey[:16], 401, fnhook.CodeUnauthorized},
		{"admin on function", "GET", fn, "Bearer " + testAdminKey, 200, ""},
		{"tenant on own function", "GET", fn, "Bearer " + token, 200, ""},
		{"tenant on own list", "GET", "/v1/tenants/" + tenant + "/functions", "Bearer " + token, 200, ""},
		{"tenant on other tenant", "GET", "/v1/tenants/" + other + "/functions", "Bearer " + token, 403, fnhook.CodeForbidden},
		{"other tenant on function", "GET", fn, "Bearer " + otherToken, 403, fnhook.CodeForbidden},
		{"other tenant put", "PUT", "/v1/tenants/" + tenant + "/functions/g", "Bearer " + otherToken, 403, fnhook.CodeForbidden},
		{"tenant on admin route", "GET", "/v1/tenants", "Bearer " + token, 403, fnhook.CodeForbidden},
		{"tenant issues token", "POST", "/v1/tenants/" + tenant + "/tokens", "Bearer " + token, 403, fnhook.CodeForbidden},
		{"tenant reads tenant", "GET", "/v1/tenants/" + tenant, "Bearer " + token, 403, fnhook.CodeForbidden},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var r reply
			if c.auth == "" {
				r = in.call(t, c.method, c.path, "", map[string]any{"code": helloCJS})
			} else {
				r = in.call(t, c.method, c.path, "", map[string]any{"code": helloCJS}, "Authorization", c.auth)
			}
			if r.status != c.status || (c.code != "" && r.errCode() != c.code) {
				t.Fatalf("%s %s: %d %s, want %d %s", c.method, c.path, r.status, r.raw, c.status, c.code)
			}
			if strings.Contains(string(r.raw), testAdminKey) || (c.auth != "" && strings.Contains(string(r.raw), strings.TrimPrefix(c.auth, "Bearer "))) {
				t.Errorf("answer echoes the credential: %s", r.raw)
			}
		})
	}
	if r := in.call(t, "GET", fn, "", nil); r.header.Get("WWW-Authenticate") == "" {
		t.Errorf("401 without WWW-Authenticate")
	}

	// Revocation takes effect at once.
	must(t, in.call(t, "DELETE", "/v1/tenants/"+tenant+"/tokens/"+tokenID, in.admin, nil), http.StatusNoContent)
	r := must(t, in.call(t, "GET", fn, token, nil), http.StatusUnauthorized)
	if !strings.Contains(r.errMessage(), "revoked") {
		t.Errorf("revoked token message: %q", r.errMessage())
	}
	must(t, in.call(t, "DELETE", "/v1/tenants/"+tenant+"/tokens/"+tokenID, in.admin, nil), http.StatusNotFound)
	// The other tenant's token still works.
	must(t, in.call(t, "GET", "/v1/tenants/"+other+"/functions", otherToken, nil), http.StatusOK)
	// A token has the documented shape.
	if !regexp.MustCompile(`^fnh\.` + other + `\.[0-9a-f]{32}\.[A-Za-z0-9_-]{43}$`).MatchString(otherToken) {
		t.Errorf("token shape: %s", otherToken)
	}
}

// TestConcurrentUpdates: conditional writes never lose an update.
func TestConcurrentUpdates(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	in := b.start(t)
	tenant, token, _ := in.tenantWithToken(t, nil)
	base := "/v1/tenants/" + tenant + "/functions/"
	const n = 10
	race := func(path string, headers ...string) map[int]int {
		var mu sync.Mutex
		statuses := map[int]int{}
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code := fmt.Sprintf("module.exports = async () => ({ body: %d });\n", i)
				r := in.call(t, "PUT", path, token, map[string]any{"code": code}, headers...)
				mu.Lock()
				statuses[r.status]++
				mu.Unlock()
				if r.status != 200 && r.status != 409 && r.status != 412 {
					t.Errorf("unexpected answer %d %s", r.status, r.raw)
				}
			}()
		}
		wg.Wait()
		return statuses
	}

	must(t, in.call(t, "PUT", base+"guarded", token, map[string]any{"code": helloCJS}), http.StatusCreated)
	st := race(base+"guarded", "If-Match", "1")
	if st[200] != 1 || st[412] != n-1 {
		t.Errorf("If-Match race: %v, want one 200 and %d 412", st, n-1)
	}
	r := must(t, in.call(t, "GET", base+"guarded", token, nil), http.StatusOK)
	if r.num("version") != 2 {
		t.Errorf("version after the If-Match race: %d, want 2", r.num("version"))
	}

	must(t, in.call(t, "PUT", base+"free", token, map[string]any{"code": helloCJS}), http.StatusCreated)
	st = race(base + "free")
	if st[200] < 1 || st[200]+st[409] != n {
		t.Errorf("unconditional race: %v, want 200s and 409s only", st)
	}
	r = must(t, in.call(t, "GET", base+"free", token, nil), http.StatusOK)
	if r.num("version") != st[200]+1 {
		t.Errorf("final version %d, want %d successful updates + 1", r.num("version"), st[200])
	}

	// Conditional delete.
	must(t, in.call(t, "DELETE", base+"guarded", token, nil, "If-Match", "1"), http.StatusPreconditionFailed)
	must(t, in.call(t, "DELETE", base+"guarded", token, nil, "If-Match", `"2"`), http.StatusNoContent)
}

// TestTwoInstances: two mgmt instances over the same table and queues answer the same.
func TestTwoInstances(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	one, two := b.start(t), b.start(t)
	tenant, token, _ := one.tenantWithToken(t, map[string]int{"maxFunctions": 5})
	base := "/v1/tenants/" + tenant + "/functions/"
	must(t, two.call(t, "PUT", base+"f", token, map[string]any{"code": helloCJS, "configuration": map[string]string{"K": "v"}}), http.StatusCreated)
	must(t, one.call(t, "PUT", base+"f", token, map[string]any{"code": helloCJS + "//2\n"}, "If-Match", "1"), http.StatusOK)
	for _, path := range []string{base + "f", "/v1/tenants/" + tenant + "/functions", "/v1/tenants/" + tenant} {
		auth := token
		if !strings.Contains(path, "/functions") {
			auth = one.admin
		}
		a := must(t, one.call(t, "GET", path, auth, nil), http.StatusOK)
		c := must(t, two.call(t, "GET", path, auth, nil), http.StatusOK)
		if string(a.raw) != string(c.raw) {
			t.Errorf("GET %s differs:\n one: %s\n two: %s", path, a.raw, c.raw)
		}
	}
	must(t, two.call(t, "PUT", base+"f", token, map[string]any{"code": helloCJS}, "If-Match", "1"), http.StatusPreconditionFailed)
	r := must(t, two.call(t, "GET", "/v1/tenants", one.admin, nil), http.StatusOK)
	if !strings.Contains(string(r.raw), `"name":"`+tenant+`"`) || !strings.Contains(string(r.raw), `"maxFunctions":5`) {
		t.Errorf("tenant list: %s", r.raw)
	}
}
