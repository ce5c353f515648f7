package gateway

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	fnhook "github.com/fnhook/fnhook/libs"
	"github.com/fnhook/fnhook/libs/handlerapi"
	"github.com/fnhook/fnhook/libs/server"
	"github.com/fnhook/fnhook/services/gateway/hashring"
	"github.com/fnhook/fnhook/services/gateway/routecache"
)

// fakeResolver answers routes from a function the test sets, counting calls.
type fakeResolver struct {
	mu      sync.Mutex
	calls   int
	refresh []bool
	ids     []string
	next    func(n int) (fnhook.Route, error)
}

func (f *fakeResolver) Do(_ context.Context, _ string, r handlerapi.Request) (fnhook.Route, error) {
	f.mu.Lock()
	f.calls++
	f.refresh = append(f.refresh, r.Refresh)
	f.ids = append(f.ids, r.RequestID)
	n := f.calls
	f.mu.Unlock()
	return f.next(n)
}

func newGateway(t *testing.T, res Resolver, cfg Config) *httptest.Server {
	t.Helper()
	_, ts := newGatewayAt(t, res, cfg, "handler:1")
	return ts
}

// newGatewayAt is newGateway with the given handlers in its ring; it returns the Gateway too.
func newGatewayAt(t *testing.T, res Resolver, cfg Config, handlers ...string) (*Gateway, *httptest.Server) {
	t.Helper()
	if cfg.MaxBody == 0 {
		cfg = Config{MaxBody: 1 << 20, MaxMgmtBody: 1 << 20, ReplayBytes: 64 << 10, CallTimeout: 5 * time.Second, MaxInflight: 100}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := server.New("gateway", log)
	var ring hashring.Ring
	ring.Set(handlers)
	g := New(log, cfg, routecache.New(100, time.Minute), &ring, res, prometheus.NewRegistry())
	g.Register(srv.Echo)
	ts := httptest.NewServer(srv.Echo)
	t.Cleanup(ts.Close)
	return g, ts
}

func TestRunProxiesWithTokenAndRetriesStaleRoute(t *testing.T) {
	var hits atomic.Int32
	// The first runner says it does not hold the function (replaced); the second serves.
	stale := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.Copy(io.Discard, r.Body)
		w.Header().Set(HeaderRunnerError, "function_not_loaded")
		w.WriteHeader(404)
	}))
	defer stale.Close()
	var seen http.Header
	var seenPath, seenBody string
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.Header.Clone()
		seenPath = r.URL.RequestURI()
		b, _ := io.ReadAll(r.Body)
		seenBody = string(b)
		w.WriteHeader(201)
		io.WriteString(w, "ok")
	}))
	defer good.Close()
	res := &fakeResolver{next: func(n int) (fnhook.Route, error) {
		if n == 1 {
			return fnhook.Route{Address: strings.TrimPrefix(stale.URL, "http://"), Token: "old", Version: 3}, nil
		}
		return fnhook.Route{Address: strings.TrimPrefix(good.URL, "http://"), Token: "tok-2", Version: 4}, nil
	}}
	gw := newGateway(t, res, Config{})

	req, _ := http.NewRequest("POST", gw.URL+"/run/acme/hook/a/b?x=1", strings.NewReader(`{"k":"v"}`))
	req.Header.Set("Authorization", "Basic c2VuZGVy")
	req.Header.Set("X-Fnhook-Min-Version", "999") // callers cannot set internal headers
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 || string(body) != "ok" {
		t.Fatalf("status %d body %q", resp.StatusCode, body)
	}
	if hits.Load() != 1 || res.calls != 2 {
		t.Fatalf("stale runner hit %d times, resolves %d; want 1 and 2", hits.Load(), res.calls)
	}
	if id := resp.Header.Get(server.HeaderRequestID); res.ids[0] != id || res.ids[1] != id {
		t.Errorf("resolves carried request ids %v, want %q", res.ids, id)
	}
	if res.refresh[0] || !res.refresh[1] {
		t.Errorf("refresh flags %v: the retry must ask the handler to check with the runner", res.refresh)
	}
	if resp.Header.Get("X-Fnhook-Cold") != "1" {
		t.Error("a call that needed a fresh resolve is not marked cold")
	}
	checks := map[string]string{
		"Authorization":          "Bearer tok-2",
		"X-Fnhook-Authorization": "Basic c2VuZGVy",
		"X-Fnhook-Min-Version":   "4",
	}
	for k, want := range checks {
		if got := seen.Get(k); got != want {
			t.Errorf("runner saw %s = %q, want %q", k, got, want)
		}
	}
	if seen.Get(server.HeaderRequestID) == "" || seen.Get(server.HeaderRequestID) != resp.Header.Get(server.HeaderRequestID) {
		t.Errorf("request id not propagated: runner %q, answer %q", seen.Get(server.HeaderRequestID), resp.Header.Get(server.HeaderRequestID))
	}
	if seenPath != "/_fnhook/run/hook/a/b?x=1" || seenBody != `{"k":"v"}` {
		t.Errorf("runner got %s %q", seenPath, seenBody)
	}

	// The good route is cached now: the next call does not resolve.
	resp, _ = http.Get(gw.URL + "/run/acme/hook")
	resp.Body.Close()
	if res.calls != 2 || resp.Header.Get("X-Fnhook-Cold") != "" {
		t.Fatalf("warm call resolved again (%d) or is marked cold", res.calls)
	}
}

func TestRunErrors(t *testing.T) {
	res := &fakeResolver{next: func(n int) (fnhook.Route, error) {
		return fnhook.Route{}, &fnhook.Error{Code: fnhook.CodeFunctionBuilding, Status: 503, Message: "still building"}
	}}
	gw := newGateway(t, res, Config{MaxBody: 10, MaxMgmtBody: 10, ReplayBytes: 5, CallTimeout: time.Second, MaxInflight: 10})
	cases := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"bad tenant name", "GET", "/run/Bad_Tenant/f", "", 404, fnhook.CodeNotFound},
		{"building", "GET", "/run/acme/f", "", 503, fnhook.CodeFunctionBuilding},
		{"body too large", "POST", "/run/acme/f", "01234567890123", 413, fnhook.CodeTooLarge},
		{"no mgmt", "GET", "/v1/tenants", "", 503, fnhook.CodeMgmtUnavailable},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(c.method, gw.URL+c.path, strings.NewReader(c.body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.status || !strings.Contains(string(b), `"code":"`+c.code+`"`) {
				t.Fatalf("got %d %s, want %d %s", resp.StatusCode, b, c.status, c.code)
			}
			if got := resp.Header.Get("Retry-After"); (c.status == 503) != (got == "1") {
				t.Errorf("%d %s with Retry-After %q; want \"1\" on every 503 and none otherwise", resp.StatusCode, c.code, got)
			}
		})
	}
}

func TestRunnerDownIsRetriedThenBadGateway(t *testing.T) {
	res := &fakeResolver{next: func(n int) (fnhook.Route, error) {
		return fnhook.Route{Address: "127.0.0.1:1", Token: "t", Version: 1}, nil
	}}
	gw := newGateway(t, res, Config{})
	resp, err := http.Get(gw.URL + "/run/acme/f")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 502 || !strings.Contains(string(b), fnhook.CodeRunnerUnavailable) || res.calls != 2 {
		t.Fatalf("got %d %s after %d resolves; want 502 runner_unavailable after 2", resp.StatusCode, b, res.calls)
	}
}

// TestNoCapacityRetryAfterReachesCaller: the handler's 503 no_capacity with Retry-After
// reaches the caller of /run with that Retry-After, through the real resolve client.
func TestNoCapacityRetryAfterReachesCaller(t *testing.T) {
	const secret = "0123456789abcdef-secret"
	handler := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != handlerapi.Path || r.Header.Get("Authorization") != "Bearer "+handlerapi.ResolveToken(secret) {
			t.Errorf("handler got %s %s with %q", r.Method, r.URL.Path, r.Header.Get("Authorization"))
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "3")
		w.WriteHeader(503)
		io.WriteString(w, `{"error":{"code":"no_capacity","message":"no runner is available on this node right now; retry shortly"}}`)
	}))
	defer handler.Close()
	_, gw := newGatewayAt(t, handlerapi.New(secret, nil), Config{}, strings.TrimPrefix(handler.URL, "http://"))
	for _, method := range []string{"GET", "POST", "HEAD"} {
		req, _ := http.NewRequest(method, gw.URL+"/run/acme/hook", strings.NewReader(`{}`))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || (method != "HEAD" && !strings.Contains(string(b), `"code":"no_capacity"`)) {
			t.Fatalf("%s: got %d %s, want 503 no_capacity", method, resp.StatusCode, b)
		}
		if got := resp.Header.Get("Retry-After"); got != "3" {
			t.Errorf("%s: Retry-After %q reached the caller, want the handler's \"3\"", method, got)
		}
	}
}

// TestErrorAnswersRetryAfter: every answer of the gateway whose code asks to retry carries
// Retry-After, whether it comes from echo's error handler, the proxy's or the runner.
func TestErrorAnswersRetryAfter(t *testing.T) {
	// A runner that no longer holds the function (the retry resolves again), and one whose
	// runtime is restarting.
	stale := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set(HeaderRunnerError, fnhook.CodeFunctionNotLoaded)
		w.WriteHeader(404)
	}))
	defer stale.Close()
	restarting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set(HeaderRunnerError, fnhook.CodeRuntimeUnavailable)
		w.WriteHeader(503)
		io.WriteString(w, `{"error":{"code":"runtime_unavailable","message":"the function runtime is restarting; try again"}}`)
	}))
	defer restarting.Close()
	// What each function's resolves answer, in turn.
	answers := map[string][]func() (fnhook.Route, error){
		"full-old-handler": {func() (fnhook.Route, error) { // no Retry-After from the handler
			return fnhook.Route{}, &fnhook.Error{Code: fnhook.CodeNoCapacity, Status: 503, Message: "full"}
		}},
		"module": {func() (fnhook.Route, error) {
			return fnhook.Route{}, &fnhook.Error{Code: fnhook.CodeModuleUnavailable, Status: 503, Message: "not installed"}
		}},
		"unavailable": {func() (fnhook.Route, error) {
			return fnhook.Route{}, &fnhook.Error{Code: fnhook.CodeUnavailable, Status: 503, Message: "load failed"}
		}},
		"failed": {func() (fnhook.Route, error) {
			return fnhook.Route{}, &fnhook.Error{Code: fnhook.CodeFunctionFailed, Status: 424, Message: "compile error"}
		}},
		"stale-then-full": {
			func() (fnhook.Route, error) {
				return fnhook.Route{Address: strings.TrimPrefix(stale.URL, "http://"), Token: "t", Version: 1}, nil
			},
			func() (fnhook.Route, error) {
				return fnhook.Route{}, &fnhook.Error{Code: fnhook.CodeNoCapacity, Status: 503, Retry: 2 * time.Second, Message: "full"}
			},
		},
		"restarting": {func() (fnhook.Route, error) {
			return fnhook.Route{Address: strings.TrimPrefix(restarting.URL, "http://"), Token: "t", Version: 1}, nil
		}},
	}
	res := &perFunction{answers: answers}
	g, gw := newGatewayAt(t, res, Config{}, "handler:1")
	_, full := newGatewayAt(t, res, Config{MaxBody: 1 << 20, MaxMgmtBody: 1 << 20, ReplayBytes: 1 << 10, CallTimeout: time.Second, MaxInflight: 0}, "handler:1")
	_, noHandler := newGatewayAt(t, res, Config{})
	deadMgmt, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := deadMgmt.Addr().String()
	deadMgmt.Close()
	g.SetMgmt([]string{deadAddr})

	tests := []struct {
		name, url  string
		status     int
		code       string
		retryAfter string
	}{
		{"no_capacity without the handler's Retry-After", gw.URL + "/run/acme/full-old-handler", 503, fnhook.CodeNoCapacity, "1"},
		{"module_unavailable", gw.URL + "/run/acme/module", 503, fnhook.CodeModuleUnavailable, "1"},
		{"unavailable", gw.URL + "/run/acme/unavailable", 503, fnhook.CodeUnavailable, "1"},
		{"function_failed: no retry", gw.URL + "/run/acme/failed", 424, fnhook.CodeFunctionFailed, ""},
		{"no_capacity on the retry after a stale route", gw.URL + "/run/acme/stale-then-full", 503, fnhook.CodeNoCapacity, "2"},
		{"the runner's runtime_unavailable", gw.URL + "/run/acme/restarting", 503, fnhook.CodeRuntimeUnavailable, "1"},
		{"overloaded", full.URL + "/run/acme/any", 503, fnhook.CodeOverloaded, "1"},
		{"no handler", noHandler.URL + "/run/acme/any", 503, fnhook.CodeNoHandler, "1"},
		{"mgmt did not answer", gw.URL + "/v1/tenants", 503, fnhook.CodeMgmtUnavailable, "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := http.Post(tt.url, "application/json", strings.NewReader(`{"k":1}`))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status || !strings.Contains(string(b), `"code":"`+tt.code+`"`) {
				t.Fatalf("got %d %s, want %d %s", resp.StatusCode, b, tt.status, tt.code)
			}
			if got := resp.Header.Get("Retry-After"); got != tt.retryAfter {
				t.Errorf("Retry-After %q, want %q", got, tt.retryAfter)
			}
			if resp.Header.Get(HeaderRunnerError) != "" {
				t.Errorf("the runner's %s header reached the caller", HeaderRunnerError)
			}
		})
	}
}

// perFunction answers each function's resolves from its own list, in turn (the last one
// again once the list is used up).
type perFunction struct {
	mu      sync.Mutex
	answers map[string][]func() (fnhook.Route, error)
	calls   map[string]int
}

func (p *perFunction) Do(_ context.Context, _ string, r handlerapi.Request) (fnhook.Route, error) {
	p.mu.Lock()
	if p.calls == nil {
		p.calls = map[string]int{}
	}
	list := p.answers[r.Function]
	n := p.calls[r.Function]
	p.calls[r.Function]++
	p.mu.Unlock()
	if len(list) == 0 {
		return fnhook.Route{}, fnhook.Errorf(fnhook.CodeNotFound, "no function %s", r.Function)
	}
	return list[min(n, len(list)-1)]()
}
