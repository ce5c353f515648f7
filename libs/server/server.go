// Package server is the HTTP skeleton every fnhook service shares: an echo server with
// /healthz, Prometheus /metrics, request ids, JSON access logs, the platform's error
// answers, and graceful shutdown when its context ends.
package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	fnhook "github.com/fnhook/fnhook/libs"
)

// HeaderRequestID carries a request's id through gateway, mgmt, handler and runner.
const HeaderRequestID = "X-Fnhook-Request-Id"

// Server is an echo server with the platform's common routes and middleware.
type Server struct {
	Echo     *echo.Echo
	Registry *prometheus.Registry
	log      *slog.Logger
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	// Ready reports whether the service can take traffic; /healthz answers 503 when it
	// returns an error. Nil means always ready.
	Ready func(context.Context) error
	// Degraded reports why a ready service serves with less than it should (e.g. the
	// handler's pool cannot start runners), or "" when it does not. /healthz then answers
	// 200 {"status":"degraded","reason":...}: it still serves what it can (the handler's
	// assigned runners), so the check must keep it in Consul's routing, which any other
	// status would end; the body names the cause. Asked only when Ready passes; nil means
	// never degraded. It must be cheap.
	Degraded func() string
	// QuietPrefix: requests whose path starts with it are logged at debug level unless
	// they fail with a 5xx (the gateway's /run/ calls: one log line per webhook call
	// cost ~5% of the gateway's CPU plus Nomad's log shipper; metrics count them all).
	QuietPrefix string
}

// New returns a Server for service, logging to log.
func New(service string, log *slog.Logger) *Server {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s := &Server{
		Echo:     e,
		Registry: reg,
		log:      log,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fnhook_http_requests_total", Help: "HTTP requests served, by route and status.",
		}, []string{"route", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fnhook_http_request_seconds", Help: "HTTP request latency, by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route"}),
	}
	reg.MustRegister(s.requests, s.latency)
	e.HTTPErrorHandler = s.handleError
	e.Use(s.middleware)
	e.GET("/healthz", s.healthz)
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	return s
}

// health is the answer of /healthz.
type health struct {
	Status string `json:"status"` // ok, degraded or unavailable
	Reason string `json:"reason,omitempty"`
}

func (s *Server) healthz(c echo.Context) error {
	if s.Ready != nil {
		if err := s.Ready(c.Request().Context()); err != nil {
			return c.JSON(http.StatusServiceUnavailable, health{Status: "unavailable", Reason: err.Error()})
		}
	}
	if s.Degraded != nil {
		if reason := s.Degraded(); reason != "" {
			return c.JSON(http.StatusOK, health{Status: "degraded", Reason: reason})
		}
	}
	return c.JSON(http.StatusOK, health{Status: "ok"})
}

// RequestID returns the request's id (set by the middleware).
func RequestID(c echo.Context) string { return c.Response().Header().Get(HeaderRequestID) }

func (s *Server) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		req := c.Request()
		id := req.Header.Get(HeaderRequestID)
		if !validRequestID(id) {
			id = NewID()
			req.Header.Set(HeaderRequestID, id)
		}
		c.Response().Header().Set(HeaderRequestID, id)
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		status := c.Response().Status
		s.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
		s.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
		level := slog.LevelInfo
		if s.QuietPrefix != "" && status < 500 && strings.HasPrefix(req.URL.Path, s.QuietPrefix) {
			level = slog.LevelDebug
		}
		if route != "/healthz" && route != "/metrics" && s.log.Enabled(req.Context(), level) {
			s.log.LogAttrs(req.Context(), level, "request",
				slog.String("method", req.Method), slog.String("path", req.URL.Path),
				slog.Int("status", status), slog.Duration("took", time.Since(start)),
				slog.String("request_id", id))
		}
		return nil
	}
}

func validRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

// handleError answers err as the platform's JSON error, with the status and Retry-After the
// code registry (or the relayed upstream answer) gives it. Internal errors are logged with
// their cause and answered with a safe message.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var fe *fnhook.Error
	var he *echo.HTTPError
	switch {
	case errors.As(err, &fe):
	case errors.As(err, &he):
		fe = fromEcho(he)
	default:
		fe = &fnhook.Error{Code: fnhook.CodeInternal, Message: "an internal error occurred", Err: err}
	}
	status := fe.HTTPStatus()
	fnhook.SetRetryAfter(c.Response().Header(), fe)
	if status >= 500 && fe.Err == nil {
		// An expected answer (building, no capacity, upstream down): worth a warning only.
		s.log.Warn("request answered with an error", "path", c.Request().URL.Path, "code", fe.Code,
			"request_id", RequestID(c))
	} else if status >= 500 {
		s.log.Error("request failed", "path", c.Request().URL.Path, "code", fe.Code, "err", err,
			"request_id", RequestID(c))
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(status)
		return
	}
	_ = c.JSON(status, fnhook.ErrorBody{Error: &fnhook.Error{Code: fe.Code, Message: fe.Message}})
}

func fromEcho(he *echo.HTTPError) *fnhook.Error {
	msg, _ := he.Message.(string)
	switch he.Code {
	case http.StatusNotFound:
		return &fnhook.Error{Code: fnhook.CodeNotFound, Message: "no such route"}
	case http.StatusMethodNotAllowed:
		return &fnhook.Error{Code: fnhook.CodeMethodNotAllowed, Message: "method not allowed on this route"}
	case http.StatusRequestEntityTooLarge:
		return &fnhook.Error{Code: fnhook.CodeTooLarge, Message: "request body too large"}
	case http.StatusUnauthorized:
		return &fnhook.Error{Code: fnhook.CodeUnauthorized, Message: "missing or invalid token"}
	}
	if msg == "" {
		msg = http.StatusText(he.Code)
	}
	// Other statuses of echo's own errors keep their status under the nearest generic code.
	code := fnhook.CodeInvalid
	if he.Code >= 500 {
		code = fnhook.CodeInternal
	}
	return &fnhook.Error{Code: code, Status: he.Code, Message: msg}
}

// Run serves on ln until ctx ends, then shuts down gracefully within grace.
func (s *Server) Run(ctx context.Context, ln net.Listener, grace time.Duration) error {
	srv := &http.Server{
		Handler:           s.Echo,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	return nil
}
