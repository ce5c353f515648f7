package runnerapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeLogs stands in for a runner's log stream: numbered lines, a long poll that a new line
// wakes, and the runner's answers to a bad token or cursor.
type fakeLogs struct {
	mu      sync.Mutex
	lines   []map[string]any // seq = index + 1
	woken   chan struct{}
	queries []string
}

func newFakeLogs() *fakeLogs { return &fakeLogs{woken: make(chan struct{})} }

// add appends a function line and wakes the waiting readers.
func (f *fakeLogs) add(msg string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lines = append(f.lines, map[string]any{
		"seq": len(f.lines) + 1, "ts": "2026-12-02T10:00:00.000Z", "source": "function", "level": "log",
		"fn": "hello", "version": 3, "requestId": "req-1", "msg": msg,
	})
	close(f.woken)
	f.woken = make(chan struct{})
}

func (f *fakeLogs) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer tok" {
		w.WriteHeader(401)
		w.Write([]byte(`{"error":{"code":"unauthorized","message":"missing or invalid runner token"}}`))
		return
	}
	if r.URL.Path != "/_fnhook/logs" || r.Method != http.MethodGet {
		w.WriteHeader(404)
		return
	}
	q := r.URL.Query()
	after, _ := strconv.Atoi(q.Get("after"))
	wait, _ := strconv.ParseFloat(q.Get("wait"), 64)
	f.mu.Lock()
	f.queries = append(f.queries, r.URL.RawQuery)
	n, woken := len(f.lines), f.woken
	f.mu.Unlock()
	if after > n {
		w.WriteHeader(400)
		fmt.Fprintf(w, `{"error":{"code":"invalid_cursor","message":"after is beyond the newest line (%d)"}}`, n)
		return
	}
	if after == n && wait > 0 {
		select {
		case <-woken:
		case <-time.After(time.Duration(wait * float64(time.Second))):
		case <-r.Context().Done():
			return
		}
	}
	f.mu.Lock()
	lines := f.lines[after:]
	f.mu.Unlock()
	out := map[string]any{"lines": lines, "next": after + len(lines), "missed": 0, "dropped": 2}
	if len(lines) == 0 {
		out["lines"] = []any{}
	}
	json.NewEncoder(w).Encode(out)
}

func TestLogsAfter(t *testing.T) {
	fake := newFakeLogs()
	srv := httptest.NewServer(fake)
	defer srv.Close()
	r := Runner{Address: strings.TrimPrefix(srv.URL, "http://"), Token: "tok"}
	c := New(nil)
	ctx := context.Background()

	fake.add("one")
	fake.add("two")
	b, err := c.LogsAfter(ctx, r, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := LogEntry{Seq: 1, TS: "2026-12-02T10:00:00.000Z", Source: LogSourceFunction, Level: "log",
		Function: "hello", Version: 3, RequestID: "req-1", Msg: "one"}
	if len(b.Lines) != 2 || b.Lines[0].Seq != want.Seq || b.Lines[0].Msg != want.Msg || b.Lines[0].Function != want.Function ||
		b.Lines[0].Version != want.Version || b.Lines[0].RequestID != want.RequestID || b.Lines[0].Source != want.Source ||
		b.Lines[1].Seq != 2 || b.Next != 2 || b.Dropped != 2 {
		t.Fatalf("LogsAfter(0) = %+v", b)
	}

	tests := []struct {
		name string
		wait time.Duration
		want string
	}{
		{"no wait", 0, "after=2&wait=0.000"},
		{"a short wait", 150 * time.Millisecond, "after=2&wait=0.150"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			b, err := c.LogsAfter(ctx, r, 2, tt.wait)
			if err != nil || len(b.Lines) != 0 || b.Next != 2 {
				t.Fatalf("LogsAfter(2) = %+v, %v", b, err)
			}
			if took := time.Since(start); took < tt.wait {
				t.Errorf("answered after %v, want a wait of %v", took, tt.wait)
			}
			fake.mu.Lock()
			got := fake.queries[len(fake.queries)-1]
			fake.mu.Unlock()
			if got != tt.want {
				t.Errorf("query = %q, want %q", got, tt.want)
			}
		})
	}

	// A long wait is capped where the runner caps it.
	go func() { time.Sleep(50 * time.Millisecond); fake.add("three") }()
	start := time.Now()
	b, err = c.LogsAfter(ctx, r, 2, time.Hour)
	if err != nil || len(b.Lines) != 1 || b.Lines[0].Msg != "three" || b.Next != 3 {
		t.Fatalf("long poll = %+v, %v", b, err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the long poll answered %v after the line came", took)
	}
	fake.mu.Lock()
	last := fake.queries[len(fake.queries)-1]
	fake.mu.Unlock()
	if last != "after=2&wait=25.000" {
		t.Errorf("query = %q, want the wait capped at 25 s", last)
	}

	if _, err := c.LogsAfter(ctx, r, 99, 0); !IsCode(err, "invalid_cursor") {
		t.Errorf("cursor from the future: %v, want invalid_cursor", err)
	}
	if _, err := c.LogsAfter(ctx, Runner{Address: r.Address, Token: "wrong"}, 0, 0); !IsCode(err, "unauthorized") {
		t.Errorf("wrong token: %v, want unauthorized", err)
	}
}

func TestFollowLogs(t *testing.T) {
	fake := newFakeLogs()
	srv := httptest.NewServer(fake)
	r := Runner{Address: strings.TrimPrefix(srv.URL, "http://"), Token: "tok"}
	c := New(nil)
	fake.add("a")
	go func() {
		for _, m := range []string{"b", "c", "d"} {
			time.Sleep(30 * time.Millisecond)
			fake.add(m)
		}
	}()

	var got []string
	stop := errors.New("enough")
	next, err := c.FollowLogs(context.Background(), r, 0, 5*time.Second, func(b LogBatch) error {
		for _, l := range b.Lines {
			got = append(got, fmt.Sprintf("%d:%s", l.Seq, l.Msg))
		}
		if len(got) >= 4 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || next != 4 || strings.Join(got, ",") != "1:a,2:b,3:c,4:d" {
		t.Fatalf("FollowLogs = %d, %v; lines %v", next, err, got)
	}

	// Ending ctx ends a long poll in progress and returns the cursor reached.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	next, err = c.FollowLogs(ctx, r, 4, 0, func(LogBatch) error { return nil })
	if !errors.Is(err, context.DeadlineExceeded) || next != 4 {
		t.Fatalf("FollowLogs until ctx ends = %d, %v", next, err)
	}

	// A runner that is gone ends the loop with the read's error.
	srv.Close()
	if _, err := c.FollowLogs(context.Background(), r, 4, time.Second, func(LogBatch) error { return nil }); err == nil {
		t.Fatal("FollowLogs against a closed runner returned no error")
	}
}
