package server

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
