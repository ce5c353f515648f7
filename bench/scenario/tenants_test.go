package scenario

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeRuns is a gateway whose /run/<tenant>/fn answers by the tenant's name: "busy"
// tenants get 503 no_capacity (with Retry-After when "polite"), "broken" ones a 502
// without a JSON body, the others 200 marked cold. It records the most calls in flight.
func fakeRuns(t *testing.T, hold func()) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var inflight, most atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inflight.Add(1)
		defer inflight.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		if hold != nil {
			hold()
		}
		switch tenant := strings.Split(r.URL.Path, "/")[2]; {
		case strings.Contains(tenant, "busy"):
			if strings.Contains(tenant, "polite") {
				w.Header().Set("Retry-After", "1")
			}
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"error":{"code":"no_capacity","message":"no runner"}}`))
		case strings.Contains(tenant, "broken"):
			w.WriteHeader(http.StatusBadGateway)
			w.Write([]byte("bad gateway"))
		default:
			w.Header().Set("x-fnhook-cold", "1")
			w.Write([]byte(`{"ok":true}`))
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &most
}

func TestRoundCountsByOutcome(t *testing.T) {
	srv, most := fakeRuns(t, nil)
	b := newBench(t, Config{Gateway: srv.URL, TenantsRoundLimit: time.Minute})
	tenants := []string{"a", "b", "c", "d-busy", "e-busy-polite", "f-busy", "g-broken", "h", "i", "j"}
	r := b.round(context.Background(), tenants, 3)
	if r.Calls != 10 || r.OK != 6 || r.NotOK != 4 || r.NotSent != 0 || r.Cold != 6 || r.NoRetryAfter != 2 {
		t.Fatalf("round %+v", r)
	}
	if r.Outcomes["503 no_capacity"] != 3 || r.Outcomes["502"] != 1 || r.Outcomes["200"] != 6 {
		t.Fatalf("outcomes %v", r.Outcomes)
	}
	if r.Latency.N != 10 || r.LatencyOK.N != 6 {
		t.Fatalf("latency n %d, ok n %d", r.Latency.N, r.LatencyOK.N)
	}
	if m := most.Load(); m > 3 {
		t.Fatalf("%d calls in flight at once, want at most 3", m)
	}
}

func TestRoundSendsABurstAtOnce(t *testing.T) {
	const n = 12
	var arrived sync.WaitGroup
	arrived.Add(n)
	all := make(chan struct{})
	go func() { arrived.Wait(); close(all) }()
	// Each call is held until all n are in flight: a round that sent them fewer at a
	// time would never finish, and the test would fail on its deadline.
	srv, most := fakeRuns(t, func() {
		arrived.Done()
		<-all
	})
	b := newBench(t, Config{Gateway: srv.URL, TenantsRoundLimit: time.Minute})
	tenants := make([]string, n)
	for i := range tenants {
		tenants[i] = "t" + string(rune('a'+i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := b.round(ctx, tenants, n)
	if r.OK != n || most.Load() != n {
		t.Fatalf("round %+v, most in flight %d; want %d answered 200, all in flight together", r, most.Load(), n)
	}
}

func TestRoundTimeLimit(t *testing.T) {
	srv, _ := fakeRuns(t, nil)
	b := newBench(t, Config{Gateway: srv.URL, TenantsRoundLimit: -time.Second})
	r := b.round(context.Background(), []string{"a", "b", "c"}, 2)
	if r.Calls != 0 || r.NotSent != 3 {
		t.Fatalf("round %+v, want 3 calls not sent", r)
	}
}

func TestForEach(t *testing.T) {
	b := newBench(t, Config{})
	items := []string{"a", "b", "c", "d", "e"}
	var (
		mu   sync.Mutex
		seen []string
	)
	b.forEach(context.Background(), items, 2, func(s string) {
		mu.Lock()
		seen = append(seen, s)
		mu.Unlock()
	})
	if len(seen) != len(items) {
		t.Fatalf("saw %v, want every item once", seen)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls := 0
	b.forEach(ctx, items, 1, func(string) { calls++ })
	if calls != 0 {
		t.Fatalf("%d items run after the context ended", calls)
	}
}
