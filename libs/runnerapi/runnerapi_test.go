package runnerapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	fnhook "github.com/fnhook/fnhook/libs"
)

func TestToken(t *testing.T) {
	tests := []struct{ secret, job, want string }{
		// RFC 4231-style known answer (HMAC-SHA256 of the classic pangram).
		{"key", "The quick brown fox jumps over the lazy dog", "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"},
	}
	for _, tt := range tests {
		if got := Token(tt.secret, tt.job); got != tt.want {
			t.Errorf("Token(%q, %q) = %s, want %s", tt.secret, tt.job, got, tt.want)
		}
	}
	if Token("s", "fnhook-runner-a-1") == Token("s", "fnhook-runner-a-2") {
		t.Error("two jobs got the same token")
	}
	if Token("s1", "job") == Token("s2", "job") {
		t.Error("two secrets gave the same token")
	}
}

func TestRunURL(t *testing.T) {
	tests := []struct{ addr, name, rest, query, want string }{
		{"127.0.0.1:2000", "hello", "", "", "http://127.0.0.1:2000/_fnhook/run/hello"},
		{"127.0.0.1:2000", "hello", "/a/b", "x=1", "http://127.0.0.1:2000/_fnhook/run/hello/a/b?x=1"},
	}
	for _, tt := range tests {
		if got := RunURL(tt.addr, tt.name, tt.rest, tt.query); got != tt.want {
			t.Errorf("RunURL = %s, want %s", got, tt.want)
		}
	}
}

// TestClient checks the requests the client sends and how it reads answers, against a
// stand-in that speaks the protocol's shapes.
func TestClient(t *testing.T) {
	const token = "tok"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" && r.Header.Get("Authorization") != "Bearer "+token {
			w.WriteHeader(401)
			w.Write([]byte(`{"error":{"code":"unauthorized","message":"missing or invalid runner token"}}`))
			return
		}
		switch {
		case r.URL.Path == "/healthz":
			w.Write([]byte(`{"state":"idle"}`))
		case r.URL.Path == "/_fnhook/assign":
			w.WriteHeader(409)
			w.Write([]byte(`{"error":{"code":"already_assigned","message":"this runner is already assigned"}}`))
		case r.URL.Path == "/_fnhook/state":
			w.Write([]byte(`{"tenant":"acme","functions":{"hello":3}}`))
		case strings.HasPrefix(r.URL.Path, "/_fnhook/functions/") && r.Method == http.MethodPut:
			var f Function
			json.NewDecoder(r.Body).Decode(&f)
			if f.Code == "bad" {
				w.WriteHeader(422)
				w.Write([]byte(`{"error":{"code":"compile_error","message":"SyntaxError: x (line 1)"}}`))
				return
			}
			if f.Dependencies == nil || f.Configuration == nil {
				w.WriteHeader(400)
				return
			}
			json.NewEncoder(w).Encode(Loaded{Name: "hello", Version: f.Version})
		default:
			w.WriteHeader(500)
			w.Write([]byte("boom"))
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	c := New(nil)
	ctx := context.Background()
	r := Runner{Address: addr, Token: token}

	if h, err := c.Health(ctx, addr); err != nil || h.State != StateIdle {
		t.Fatalf("Health = %+v, %v", h, err)
	}
	if err := c.Assign(ctx, r, "acme"); !IsCode(err, CodeAlreadyAssigned) || fnhook.StatusOf(err) != 409 {
		t.Fatalf("Assign = %v, want already_assigned 409", err)
	}
	if _, err := c.State(ctx, Runner{Address: addr, Token: "wrong"}); fnhook.StatusOf(err) != 401 {
		t.Fatalf("State with a wrong token = %v, want 401", err)
	}
	st, err := c.State(ctx, r)
	if err != nil || st.Tenant != "acme" || st.Functions["hello"] != 3 || st.IdleMs != nil {
		t.Fatalf("State = %+v, %v", st, err)
	}
	if l, err := c.Load(ctx, r, "hello", Function{Version: 4, Code: "ok"}); err != nil || l.Version != 4 {
		t.Fatalf("Load = %+v, %v", l, err)
	}
	_, err = c.Load(ctx, r, "hello", Function{Version: 5, Code: "bad"})
	if !IsCode(err, CodeCompileError) || fnhook.ErrorMessage(err) != "SyntaxError: x (line 1)" {
		t.Fatalf("Load of bad code = %v, want compile_error with the runner's message", err)
	}
	if _, err := c.Logs(ctx, r, "hello"); fnhook.StatusOf(err) != 500 {
		t.Fatalf("Logs against a 500 = %v", err)
	}
}
