package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	fnhook "github.com/fnhook/fnhook/libs"
)

func TestHealthz(t *testing.T) {
	tests := []struct {
		name     string
		ready    func(context.Context) error
		degraded func() string
		status   int
		body     string
	}{
		{"no checks", nil, nil, 200, `{"status":"ok"}`},
		{"ready, not degraded", func(context.Context) error { return nil }, func() string { return "" }, 200, `{"status":"ok"}`},
		{"degraded still serves", nil, func() string { return "no runner could start: allocation failed" }, 200,
			`{"status":"degraded","reason":"no runner could start: allocation failed"}`},
		{"not ready wins over degraded", func(context.Context) error { return errors.New("queue down") }, func() string { return "x" }, 503,
			`{"status":"unavailable","reason":"queue down"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New("test", slog.New(slog.DiscardHandler))
			s.Ready, s.Degraded = tt.ready, tt.degraded
			rec := httptest.NewRecorder()
			s.Echo.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
			if rec.Code != tt.status || strings.TrimSpace(rec.Body.String()) != tt.body {
				t.Fatalf("/healthz = %d %s, want %d %s", rec.Code, rec.Body.String(), tt.status, tt.body)
			}
		})
	}
}

// TestErrorAnswers: an error answer has the registry's status, and Retry-After when its code
// (or the upstream answer it relays) asks to retry.
func TestErrorAnswers(t *testing.T) {
	tests := []struct {
		name       string
		method     string
		err        error
		status     int
		code       string
		retryAfter string
	}{
		{"no capacity", http.MethodGet, &fnhook.Error{Code: fnhook.CodeNoCapacity, Message: "full"}, 503, "no_capacity", "1"},
		{"building, wrapped", http.MethodPost, fmt.Errorf("resolve acme/f: %w", &fnhook.Error{Code: fnhook.CodeFunctionBuilding, Message: "building"}), 503, "function_building", "1"},
		{"unavailable, HEAD", http.MethodHead, fnhook.Errorf(fnhook.CodeUnavailable, "registry down"), 503, "", "1"},
		{"relayed Retry-After", http.MethodGet, &fnhook.Error{Code: fnhook.CodeNoCapacity, Status: 503, Retry: 4 * time.Second, Message: "full"}, 503, "no_capacity", "4"},
		{"not found: no retry", http.MethodGet, fnhook.Errorf(fnhook.CodeNotFound, "no such function"), 404, "not_found", ""},
		{"function failed: no retry", http.MethodGet, &fnhook.Error{Code: fnhook.CodeFunctionFailed, Message: "compile error"}, 424, "function_failed", ""},
		{"a plain error is internal", http.MethodGet, errors.New("disk on fire"), 500, "internal", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New("test", slog.New(slog.DiscardHandler))
			s.Echo.Any("/x", func(echo.Context) error { return tt.err })
			rec := httptest.NewRecorder()
			s.Echo.ServeHTTP(rec, httptest.NewRequest(tt.method, "/x", nil))
			if rec.Code != tt.status {
				t.Fatalf("status %d (%s), want %d", rec.Code, rec.Body, tt.status)
			}
			if got := rec.Header().Get("Retry-After"); got != tt.retryAfter {
				t.Errorf("Retry-After %q, want %q", got, tt.retryAfter)
			}
			if tt.code == "" {
				return
			}
			var body fnhook.ErrorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error == nil || body.Error.Code != tt.code {
				t.Fatalf("body %s, want code %s", rec.Body, tt.code)
			}
			if strings.Contains(rec.Body.String(), "disk on fire") {
				t.Error("the cause of an internal error reached the caller")
			}
		})
	}
}

// TestEchoErrors: echo's own errors answer registered codes.
func TestEchoErrors(t *testing.T) {
	s := New("test", slog.New(slog.DiscardHandler))
	s.Echo.GET("/x", func(c echo.Context) error { return c.NoContent(204) })
	for _, tt := range []struct {
		method, path string
		status       int
		code         string
	}{
		{http.MethodGet, "/nowhere", 404, fnhook.CodeNotFound},
		{http.MethodDelete, "/x", 405, fnhook.CodeMethodNotAllowed},
	} {
		rec := httptest.NewRecorder()
		s.Echo.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
		var body fnhook.ErrorBody
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		if rec.Code != tt.status || body.Error == nil || body.Error.Code != tt.code {
			t.Errorf("%s %s = %d %s, want %d %s", tt.method, tt.path, rec.Code, rec.Body, tt.status, tt.code)
		}
		if _, ok := fnhook.CodeInfo(body.Error.Code); !ok {
			t.Errorf("%s %s answered the unregistered code %q", tt.method, tt.path, body.Error.Code)
		}
	}
}
