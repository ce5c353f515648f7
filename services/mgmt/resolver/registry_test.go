package resolver

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	fnhook "github.com/fnhook/fnhook/libs"
)

// TestRegistryClient runs against a fake registry: how it asks, what it caches, and how it
// answers unknown packages, oversized documents and a broken registry.
func TestRegistryClient(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if !strings.HasPrefix(r.Header.Get("Accept"), "application/vnd.npm.install-v1+json") {
			t.Errorf("Accept = %q", r.Header.Get("Accept"))
		}
		switch r.URL.EscapedPath() {
		case "/dayjs":
			_, _ = w.Write([]byte(`{"name":"dayjs","dist-tags":{"latest":"1.11.13"},"versions":{"1.10.0":{"dist":{}},"1.11.13":{"dist":{}}}}`))
		case "/@types%2fnode":
			_, _ = w.Write([]byte(`{"name":"@types/node","dist-tags":{"latest":"22.1.0"},"versions":{"20.0.0":{},"22.1.0":{}}}`))
		case "/huge":
			_, _ = w.Write([]byte(`{"name":"huge","versions":{"1.0.0":{"x":"` + strings.Repeat("x", 4096) + `"}}}`))
		case "/broken":
			http.Error(w, "boom", http.StatusBadGateway)
		default:
			http.Error(w, `{"error":"Not found"}`, http.StatusNotFound)
		}
	}))
	defer ts.Close()
	r, err := New(Options{Registry: ts.URL, MaxBytes: 2048, TTL: time.Minute, MaxEntries: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	got, err := r.Resolve(ctx, map[string]string{"dayjs": "^1.10.0", "@types/node": "^20"})
	if err != nil {
		t.Fatal(err)
	}
	if got["dayjs"] != "1.11.13" || got["@types/node"] != "20.0.0" {
		t.Errorf("Resolve = %v", got)
	}
	before := hits.Load()
	if _, err := r.Resolve(ctx, map[string]string{"dayjs": "latest"}); err != nil {
		t.Fatal(err)
	}
	if hits.Load() != before {
		t.Errorf("cached metadata fetched again")
	}

	cases := []struct {
		deps         map[string]string
		code, substr string
	}{
		{map[string]string{"nope": "1"}, fnhook.CodeUnresolvableDependency, "nope: no such package"},
		{map[string]string{"dayjs": "^2"}, fnhook.CodeUnresolvableDependency, `no published version of dayjs satisfies "^2"`},
		{map[string]string{"huge": "1"}, fnhook.CodeUnresolvableDependency, "larger than"},
		{map[string]string{"broken": "1"}, fnhook.CodeUnavailable, "could not be reached"},
	}
	for _, c := range cases {
		_, err := r.Resolve(ctx, c.deps)
		if fnhook.ErrorCode(err) != c.code || !strings.Contains(fnhook.ErrorMessage(err), c.substr) {
			t.Errorf("Resolve(%v) = %v; want %s with %q", c.deps, err, c.code, c.substr)
		}
	}
	r.mu.Lock()
	n := len(r.cache)
	r.mu.Unlock()
	if n > 2 {
		t.Errorf("cache holds %d entries, bound is 2", n)
	}
}

func TestCacheExpires(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		_, _ = w.Write([]byte(`{"name":"a","dist-tags":{"latest":"1.0.0"},"versions":{"1.0.0":{}}}`))
	}))
	defer ts.Close()
	r, err := New(Options{Registry: ts.URL, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	r.now = func() time.Time { return now }
	for range 2 {
		if _, err := r.Metadata(context.Background(), "a"); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(61 * time.Second)
	if _, err := r.Metadata(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	if hits.Load() != 2 {
		t.Errorf("registry hit %d times, want 2 (one cached read, one after expiry)", hits.Load())
	}
}
