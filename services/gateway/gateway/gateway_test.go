package gateway

import (
	"context"
	"io"
	"log/slog"
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
	if cfg.MaxBody == 0 {
		cfg = Config{MaxBody: 1 << 20, MaxMgmtBody: 1 << 20, ReplayBytes: 64 << 10, CallTimeout: 5 * time.Second, MaxInflight: 100}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := server.New("gateway", log)
	var ring hashring.Ring
	ring.Set([]string{"handler:1"})
	g := New(log, cfg, routecache.New(100, time.Minute), &ring, res, prometheus.NewRegistry())
	g.Register(srv.Echo)
	ts := httptest.NewServer(srv.Echo)
	t.Cleanup(ts.Close)
	return ts
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
		return fnhook.Route{}, &fnhook.Error{Code: "function_building", Status: 503, Message: "still building"}
	}}
	gw := newGateway(t, res, Config{MaxBody: 10, MaxMgmtBody: 10, ReplayBytes: 5, CallTimeout: time.Second, MaxInflight: 10})
	cases := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"bad tenant name", "GET", "/run/Bad_Tenant/f", "", 404, "not_found"},
		{"building", "GET", "/run/acme/f", "", 503, "function_building"},
		{"body too large", "POST", "/run/acme/f", "01234567890123", 413, "too_large"},
		{"no mgmt", "GET", "/v1/tenants", "", 503, "mgmt_unavailable"},
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
			if c.code == "function_building" && resp.Header.Get("Retry-After") == "" {
				t.Error("503 building without Retry-After")
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
	if resp.StatusCode != 502 || !strings.Contains(string(b), "runner_unavailable") || res.calls != 2 {
		t.Fatalf("got %d %s after %d resolves; want 502 runner_unavailable after 2", resp.StatusCode, b, res.calls)
	}
}
