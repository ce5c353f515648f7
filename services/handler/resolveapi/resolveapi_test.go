package resolveapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	fnhook "github.com/fnhook/fnhook/libs"
	"github.com/fnhook/fnhook/libs/handlerapi"
	"github.com/fnhook/fnhook/libs/server"
)

type fakeResolver struct{ calls int }

func (f *fakeResolver) Resolve(_ context.Context, tenant, function string, refresh bool) (fnhook.Route, error) {
	f.calls++
	switch function {
	case "building":
		return fnhook.Route{}, &fnhook.Error{Code: fnhook.CodeFunctionBuilding, Message: "being built"}
	case "full":
		return fnhook.Route{}, &fnhook.Error{Code: fnhook.CodeNoCapacity, Message: "no runner"}
	case "module":
		return fnhook.Route{}, &fnhook.Error{Code: fnhook.CodeModuleUnavailable, Message: "not installed", Err: errors.New("digest mismatch")}
	case "failed":
		return fnhook.Route{}, &fnhook.Error{Code: fnhook.CodeFunctionFailed, Message: "compile error"}
	}
	return fnhook.Route{Address: "127.0.0.1:9", Token: "t", Version: 1}, nil
}

func TestResolveAPI(t *testing.T) {
	const secret = "0123456789abcdef-secret"
	srv := server.New("handler-test", slog.New(slog.DiscardHandler))
	fr := &fakeResolver{}
	Mount(srv.Echo, fr, secret)
	good := "Bearer " + handlerapi.ResolveToken(secret)
	tests := []struct {
		name, auth, body string
		status           int
		retryAfter       string
		reaches          bool
	}{
		{"right token", good, `{"tenant":"acme","function":"hello"}`, 200, "", true},
		{"no token", "", `{"tenant":"acme","function":"hello"}`, 401, "", false},
		{"the secret itself is no token", "Bearer " + secret, `{"tenant":"acme","function":"hello"}`, 401, "", false},
		{"another secret's token", "Bearer " + handlerapi.ResolveToken("another-secret-xx"), `{"tenant":"acme","function":"hello"}`, 401, "", false},
		{"lower-case scheme and a prefix of the token", "bearer " + handlerapi.ResolveToken(secret)[:10], `{}`, 401, "", false},
		{"bad names", good, `{"tenant":"../x","function":"hello"}`, 400, "", false},
		{"not json", good, `tenant=acme`, 400, "", false},
		{"too large", good, `{"tenant":"` + strings.Repeat("a", 5000) + `"}`, 413, "", false},
		{"building asks to retry", good, `{"tenant":"acme","function":"building"}`, 503, "1", true},
		{"no capacity asks to retry", good, `{"tenant":"acme","function":"full"}`, 503, "1", true},
		{"module unavailable asks to retry", good, `{"tenant":"acme","function":"module"}`, 503, "1", true},
		{"failed does not", good, `{"tenant":"acme","function":"failed"}`, 424, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := fr.calls
			req := httptest.NewRequest(http.MethodPost, handlerapi.Path, strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/json")
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			rec := httptest.NewRecorder()
			srv.Echo.ServeHTTP(rec, req)
			if rec.Code != tt.status {
				t.Fatalf("status %d (%s), want %d", rec.Code, rec.Body, tt.status)
			}
			if got := rec.Header().Get("Retry-After"); got != tt.retryAfter {
				t.Fatalf("Retry-After %q, want %q", got, tt.retryAfter)
			}
			if reached := fr.calls > before; reached != tt.reaches {
				t.Fatalf("resolver reached=%v, want %v", reached, tt.reaches)
			}
		})
	}
}
