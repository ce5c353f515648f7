package load

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const wrkOK = `Running 3s test @ http://127.0.0.1:18090/
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.64ms    6.00ms  87.87ms   94.40%
    Req/Sec    12.37k     6.32k   19.85k    53.33%
  Latency Distribution
     50%  412.00us
     75%    1.90ms
     90%    5.68ms
     99%   35.96ms
  37011 requests in 3.01s, 6.28MB read
Requests/sec:  12289.82
Transfer/sec:      2.09MB
`

const wrkErrors = `Running 10s test @ http://127.0.0.1:8080/run/a/b
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.10s   200.00ms   2.00s    80.00%
  Latency Distribution
     50%    1.00s
     75%    1.20s
     90%    1.50s
     99%    1.00m
  140 requests in 10.00s, 20.00KB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:     14.00
Transfer/sec:      2.00KB
`

func TestParseWrk(t *testing.T) {
	tests := []struct {
		name               string
		out                string
		wantErr            bool
		p50, p90, p99, max float64
		requests, errs     int64
		rps                float64
	}{
		{name: "clean run", out: wrkOK, p50: 0.412, p90: 5.68, p99: 35.96, max: 87.87, requests: 37011, rps: 12289.82},
		{name: "errors and slow answers", out: wrkErrors, p50: 1000, p90: 1500, p99: 60000, max: 2000, requests: 140, errs: 12, rps: 14},
		{name: "not wrk's output", out: "unable to connect to 127.0.0.1:1 Connection refused\n", wantErr: true},
		{name: "bad unit", out: "     50%    1.00h\nRequests/sec: 1\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := ParseWrk(tt.out)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("want an error, got %+v", l)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			near := func(what string, got, want float64) {
				if d := got - want; d > 1e-9 || d < -1e-9 {
					t.Errorf("%s = %v, want %v", what, got, want)
				}
			}
			near("p50", l.Latency.P50, tt.p50)
			near("p90", l.Latency.P90, tt.p90)
			near("p99", l.Latency.P99, tt.p99)
			near("max", l.Latency.Max, tt.max)
			near("rps", l.RPS, tt.rps)
			if l.Requests != tt.requests || l.Errors != tt.errs || l.Tool != "wrk" {
				t.Errorf("requests %d errors %d tool %s, want %d %d wrk", l.Requests, l.Errors, l.Tool, tt.requests, tt.errs)
			}
		})
	}
}

func TestWrkDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    float64
		wantErr bool
	}{
		{"250.00us", 0.25, false}, {"1.5ms", 1.5, false}, {"2.00s", 2000, false}, {"1.00m", 60000, false},
		{"3", 0, true}, {"xms", 0, true},
	}
	for _, tt := range tests {
		got, err := wrkDuration(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("wrkDuration(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestClosed(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		time.Sleep(2 * time.Millisecond)
		if r.URL.Path == "/flaky" && n%4 == 0 {
			http.Error(w, "nope", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok"))
	}))
	var conns atomic.Int64
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	tests := []struct {
		name     string
		path     string
		wantErrs bool
	}{
		{"all answered", "/", false},
		{"some failed", "/flaky", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls.Store(0)
			conns.Store(0)
			l, err := Closed{Concurrency: 4, Warmup: 100 * time.Millisecond, Duration: 400 * time.Millisecond}.Run(context.Background(), srv.URL+tt.path)
			if err != nil {
				t.Fatal(err)
			}
			// 4 workers at ~2 ms each for 0.4 s: on the order of 800, never more than the
			// server saw, warm-up excluded.
			if l.Requests < 50 || l.Requests >= calls.Load() {
				t.Fatalf("requests %d, server saw %d", l.Requests, calls.Load())
			}
			// The transport may dial a few extra connections when a finished one is not back
			// in its idle pool yet; without keep-alive it would be one per request.
			if got := conns.Load(); got > 12 || got*10 > l.Requests {
				t.Errorf("%d connections opened for 4 workers and %d requests: keep-alive is not working", got, l.Requests)
			}
			if tt.wantErrs != (l.Errors > 0) || (l.Errors > 0) != (l.FirstError != "") {
				t.Fatalf("errors %d (%q), want errors: %v", l.Errors, l.FirstError, tt.wantErrs)
			}
			if int64(l.Latency.N) != l.Requests-l.Errors {
				t.Fatalf("latency samples %d, want requests-errors %d", l.Latency.N, l.Requests-l.Errors)
			}
			if l.Latency.P50 < 2 || l.Latency.P99 < l.Latency.P50 {
				t.Fatalf("latency %+v: p50 below the server's 2 ms sleep", l.Latency)
			}
			wantRPS := float64(l.Requests-l.Errors) / 0.4
			if d := l.RPS - wantRPS; d > 1e-6 || d < -1e-6 {
				t.Fatalf("rps %v, want %v", l.RPS, wantRPS)
			}
		})
	}
}

func TestClosedRefusesNonsense(t *testing.T) {
	if _, err := (Closed{Concurrency: 0, Duration: time.Second}).Run(context.Background(), "http://127.0.0.1:1/"); err == nil {
		t.Fatal("want an error for zero concurrency")
	}
}

func TestClosedCountsRefusedConnections(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there any more
	l, err := Closed{Concurrency: 2, Duration: 200 * time.Millisecond}.Run(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	if l.Errors == 0 || l.Errors != l.Requests || l.Latency.N != 0 || l.RPS != 0 {
		t.Fatalf("want every request failed, got %+v", l)
	}
}

func TestClosedOnWindow(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	defer srv.Close()
	var edges []bool
	c := Closed{Concurrency: 2, Warmup: 50 * time.Millisecond, Duration: 100 * time.Millisecond}
	c.OnWindow = func(end bool) {
		edges = append(edges, end) // called from one goroutine, in order
	}
	l, err := c.Run(context.Background(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if len(edges) != 2 || edges[0] || !edges[1] {
		t.Fatalf("OnWindow called with %v, want [false true]", edges)
	}
	if l.Requests == 0 {
		t.Fatal("no request counted")
	}
}

func TestPin(t *testing.T) {
	var before unix.CPUSet
	if err := unix.SchedGetaffinity(0, &before); err != nil {
		t.Fatal("read this process's CPU affinity:", err)
	}
	cpu := -1
	for i := range 1024 {
		if before.IsSet(i) {
			cpu = i
			break
		}
	}
	prevProcs := runtime.GOMAXPROCS(0)
	restore, err := Pin(cpu)
	if err != nil {
		t.Fatal(err)
	}
	threads := func() map[int]unix.CPUSet {
		out := map[int]unix.CPUSet{}
		entries, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			tid, _ := strconv.Atoi(e.Name())
			var s unix.CPUSet
			if err := unix.SchedGetaffinity(tid, &s); err == nil {
				out[tid] = s
			}
		}
		return out
	}
	for tid, s := range threads() {
		if s.Count() != 1 || !s.IsSet(cpu) {
			t.Errorf("thread %d pinned to %d CPUs (cpu %d set: %v), want only cpu %d", tid, s.Count(), cpu, s.IsSet(cpu), cpu)
		}
	}
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Errorf("GOMAXPROCS %d while pinned, want 1", got)
	}
	restore()
	for tid, s := range threads() {
		if s != before {
			t.Errorf("thread %d has %d CPUs after restore, want %d", tid, s.Count(), before.Count())
		}
	}
	if got := runtime.GOMAXPROCS(0); got != prevProcs {
		t.Errorf("GOMAXPROCS %d after restore, want %d", got, prevProcs)
	}
}
