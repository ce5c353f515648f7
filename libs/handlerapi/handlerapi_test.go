package handlerapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	fnhook "github.com/fnhook/fnhook/libs"
)

func TestResolveToken(t *testing.T) {
	// hex(HMAC-SHA256("key", "resolve")), computed independently with openssl:
	// printf resolve | openssl dgst -sha256 -hmac key
	const want = "f681155133a98f0b3d3d843730f7f3a1461fdd847bc224141681b53333cff0fa"
	if got := ResolveToken("key"); got != want {
		t.Fatalf("ResolveToken(key) = %s, want %s", got, want)
	}
	if ResolveToken("key") == ResolveToken("other-key") {
		t.Fatal("two secrets gave one token")
	}
}

func TestResolve(t *testing.T) {
	const secret = "0123456789abcdef"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+ResolveToken(secret) {
			w.WriteHeader(401)
			w.Write([]byte(`{"error":{"code":"unauthorized","message":"no"}}`))
			return
		}
		var req Request
		json.NewDecoder(r.Body).Decode(&req)
		switch req.Function {
		case "ok":
			json.NewEncoder(w).Encode(fnhook.Route{Address: "127.0.0.1:1", Token: "t", Version: 2, Cold: true})
		case "building":
			w.Header().Set("Retry-After", "3")
			w.WriteHeader(503)
			w.Write([]byte(`{"error":{"code":"function_building","message":"being built"}}`))
		case "full":
			w.WriteHeader(503)
			w.Write([]byte(`{"error":{"code":"no_capacity","message":"no runner"}}`))
		default:
			w.WriteHeader(502)
			w.Write([]byte(`<html>proxy error</html>`))
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	c := New(secret, nil)
	route, err := c.Resolve(ctx, srv.URL, "acme", "ok")
	if err != nil || route != (fnhook.Route{Address: "127.0.0.1:1", Token: "t", Version: 2, Cold: true}) {
		t.Fatalf("Resolve = %+v, %v", route, err)
	}
	_, err = c.Resolve(ctx, srv.URL[len("http://"):], "acme", "building")
	fe, ok := err.(*fnhook.Error)
	if !ok || fe.Code != fnhook.CodeFunctionBuilding || fe.HTTPStatus() != 503 || fe.Message != "being built" {
		t.Fatalf("Resolve(building) = %#v, want *fnhook.Error function_building 503", err)
	}
	if fe.RetryAfter() != 3*time.Second {
		t.Fatalf("Resolve(building) asks to retry after %s; the handler said 3s", fe.RetryAfter())
	}
	// Without a Retry-After from the handler, the registry's policy applies.
	if _, err := c.Resolve(ctx, srv.URL, "acme", "full"); fnhook.ErrorCode(err) != fnhook.CodeNoCapacity || fnhook.RetryAfterOf(err) != time.Second {
		t.Fatalf("Resolve(full) = %v, retry after %s; want no_capacity after 1s", err, fnhook.RetryAfterOf(err))
	}
	if _, err := c.Resolve(ctx, srv.URL, "acme", "other"); fnhook.StatusOf(err) != 502 {
		t.Fatalf("Resolve against a non-JSON 502 = %v", err)
	}
	if _, err := New("wrong-secret-xxxxx", nil).Resolve(ctx, srv.URL, "acme", "ok"); fnhook.ErrorCode(err) != fnhook.CodeUnauthorized {
		t.Fatalf("Resolve with a wrong secret = %v, want unauthorized", err)
	}
}
