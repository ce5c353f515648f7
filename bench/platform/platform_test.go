package platform

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	fnhook "github.com/fnhook/fnhook/libs"
)

func TestParsePool(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		want    Pool
		wantErr bool
	}{
		{"handler exposition", `# HELP fnhook_handler_pool_idle Idle, unassigned runners ready to take a tenant.
# TYPE fnhook_handler_pool_idle gauge
fnhook_handler_pool_idle 2
# TYPE fnhook_handler_pool_starting gauge
fnhook_handler_pool_starting 1
fnhook_handler_pool_assigned 5
fnhook_handler_pool_idle_other 9
go_goroutines 42
`, Pool{Idle: 2, Starting: 1, Assigned: 5}, false},
		{"float notation", "fnhook_handler_pool_idle 3e+00\nfnhook_handler_pool_starting 0\n", Pool{Idle: 3}, false},
		{"gauges missing", "go_goroutines 42\n", Pool{}, true},
		{"garbage value", "fnhook_handler_pool_idle x\nfnhook_handler_pool_starting 0\n", Pool{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePool(strings.NewReader(tt.text))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr && got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// fake is a stand-in gateway: it checks the admin key and answers from a table.
func fake(t *testing.T) *httptest.Server {
	t.Helper()
	polls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/") && r.Header.Get("Authorization") != "Bearer admin-key-0123456789" {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":{"code":"unauthorized","message":"no token"}}`))
			return
		}
		switch {
		case r.Method == http.MethodPut && r.URL.Path == "/v1/tenants/acme":
			w.WriteHeader(http.StatusCreated)
			w.Write([]byte(`{"name":"acme"}`))
		case r.Method == http.MethodGet && r.URL.Path == "/v1/tenants":
			w.Write([]byte(`{"tenants":[{"name":"acme","limits":{}},{"name":"bench-1234abcd-cold-dayjs-3"}]}`))
		case r.Method == http.MethodDelete && r.URL.Path == "/v1/tenants/gone":
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error":{"code":"not_found","message":"no tenant"}}`))
		case r.Method == http.MethodPut && r.URL.Path == "/v1/tenants/acme/functions/hello":
			var body FunctionBody
			if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Dependencies["dayjs"] != "^1.11.0" {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			w.Write([]byte(`{"tenant":"acme","name":"hello","version":1,"status":"building","pending":["dayjs@1.11.13"]}`))
		case r.Method == http.MethodGet && r.URL.Path == "/v1/tenants/acme/functions/hello":
			polls++
			status := "building"
			if polls >= 3 {
				status = "ready"
			}
			w.Write([]byte(`{"tenant":"acme","name":"hello","version":1,"status":"` + status + `","resolvedDependencies":{"dayjs":"1.11.13"}}`))
		case r.URL.Path == "/run/acme/hello":
			w.Header().Set("x-fnhook-cold", "1")
			w.Write([]byte(`{"ok":true}`))
		case r.URL.Path == "/run/acme/broken":
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"error":{"code":"no_capacity","message":"no runner"}}`))
		default:
			w.WriteHeader(http.StatusTeapot)
			w.Write([]byte("unexpected"))
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestClient(t *testing.T) {
	srv := fake(t)
	ctx := context.Background()
	c := New(srv.URL+"/", "admin-key-0123456789", srv.URL+"/metrics")

	if err := c.PutTenant(ctx, "acme"); err != nil {
		t.Fatalf("PutTenant: %v", err)
	}
	if names, err := c.Tenants(ctx); err != nil || strings.Join(names, ",") != "acme,bench-1234abcd-cold-dayjs-3" {
		t.Fatalf("Tenants = %v, %v", names, err)
	}
	if err := c.DeleteTenant(ctx, "gone"); err != nil {
		t.Fatalf("DeleteTenant of a missing tenant: %v", err)
	}
	f, err := c.PutFunction(ctx, "acme", "hello", FunctionBody{Code: "x", Dependencies: map[string]string{"dayjs": "^1.11.0"}})
	if err != nil || f.Status != fnhook.StatusBuilding || f.Version != 1 {
		t.Fatalf("PutFunction = %+v, %v", f, err)
	}
	f, err = c.WaitSettled(ctx, "acme", "hello", time.Millisecond)
	if err != nil || f.Status != fnhook.StatusReady || f.ResolvedDependencies["dayjs"] != "1.11.13" {
		t.Fatalf("WaitSettled = %+v, %v", f, err)
	}
	call, err := c.Run(ctx, "acme", "hello")
	if err != nil || call.Status != 200 || !call.Cold || string(call.Body) != `{"ok":true}` || call.Latency <= 0 {
		t.Fatalf("Run = %+v, %v", call, err)
	}
	call, err = c.Run(ctx, "acme", "broken")
	if err != nil || call.Status != 503 || call.Cold || call.Code != "no_capacity" || call.RetryAfter != "1" {
		t.Fatalf("Run broken = %+v, %v", call, err)
	}

	tests := []struct {
		name   string
		client *Client
		call   func(c *Client) error
		status int
		code   string
	}{
		{"wrong key", New(srv.URL, "wrong", ""), func(c *Client) error { return c.PutTenant(ctx, "acme") }, 401, "unauthorized"},
		{"unexpected answer without error body", c, func(c *Client) error { return c.PutTenant(ctx, "other") }, 418, ""},
		{"missing function", c, func(c *Client) error { _, err := c.GetFunction(ctx, "acme", "nope"); return err }, 418, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(tt.client)
			var ae *APIError
			if !errors.As(err, &ae) || ae.Status != tt.status || ae.Code != tt.code {
				t.Fatalf("err = %v, want status %d code %q", err, tt.status, tt.code)
			}
		})
	}
}

func TestErrorCode(t *testing.T) {
	tests := []struct{ body, want string }{
		{`{"error":{"code":"no_capacity","message":"no runner"}}`, "no_capacity"},
		{`{"error":{"message":"no code"}}`, ""},
		{`{"ok":true}`, ""},
		{`<html>Bad Gateway</html>`, ""},
		{``, ""},
	}
	for _, tt := range tests {
		if got := ErrorCode([]byte(tt.body)); got != tt.want {
			t.Errorf("ErrorCode(%q) = %q, want %q", tt.body, got, tt.want)
		}
	}
}

func TestWaitSettledGivesUp(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"status":"building","pending":["x@1.0.0"]}`))
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := New(srv.URL, "k", "").WaitSettled(ctx, "a", "b", 5*time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "x@1.0.0") {
		t.Fatalf("err = %v, want a deadline naming the pending module", err)
	}
}
