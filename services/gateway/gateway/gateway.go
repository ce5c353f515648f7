// Package gateway is fnhook's HTTP front: it proxies the management API (/v1) to healthy
// mgmt instances, and runs tenants' functions (/run/{tenant}/{function}/...) by proxying
// to the tenant's runner, found through the route cache or the handler that owns the
// tenant.
package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	fnhook "github.com/fnhook/fnhook/libs"
	"github.com/fnhook/fnhook/libs/handlerapi"
	"github.com/fnhook/fnhook/libs/runnerapi"
	"github.com/fnhook/fnhook/libs/server"
	"github.com/fnhook/fnhook/services/gateway/hashring"
	"github.com/fnhook/fnhook/services/gateway/routecache"
)

// Resolver asks the handler at address where a tenant's function runs. With r.Refresh the
// handler checks with the runner instead of trusting its own record (the last route failed).
type Resolver interface {
	Do(ctx context.Context, address string, r handlerapi.Request) (fnhook.Route, error)
}

// Config bounds what the gateway accepts.
type Config struct {
	// MaxBody bounds a /run request body; larger bodies get 413.
	MaxBody int64
	// MaxMgmtBody bounds a /v1 request body.
	MaxMgmtBody int64
	// ReplayBytes: bodies up to this size are buffered so a call can be retried once on a
	// stale route; larger ones stream straight through and are not retried.
	ReplayBytes int64
	// CallTimeout bounds a whole call to a runner (the runner enforces the function's own
	// timeout; this is the platform's ceiling).
	CallTimeout time.Duration
	// MaxInflight bounds concurrent /run calls; more get 503.
	MaxInflight int
}

// HeaderTenantAuthorization carries the caller's own Authorization header to the
// function, since the runner's token travels in Authorization.
const HeaderTenantAuthorization = "X-Fnhook-Authorization"

// HeaderRunnerError marks an error answered by the runner itself (not the function).
const HeaderRunnerError = "X-Fnhook-Error"

// Gateway serves /v1 and /run. Create with New; safe for concurrent use.
type Gateway struct {
	log      *slog.Logger
	cfg      Config
	routes   *routecache.Cache
	handlers *hashring.Ring
	mgmt     atomic.Pointer[[]string]
	mgmtNext atomic.Uint64
	resolver Resolver
	inflight chan struct{}

	runProxy  *httputil.ReverseProxy
	mgmtProxy *httputil.ReverseProxy

	calls    *prometheus.CounterVec
	resolves *prometheus.HistogramVec
}

// New returns a Gateway. handlers is the ring of handler addresses and routes the cache;
// both are kept current by the caller (Consul watch, events).
func New(log *slog.Logger, cfg Config, routes *routecache.Cache, handlers *hashring.Ring, resolver Resolver, reg prometheus.Registerer) *Gateway {
	g := &Gateway{
		log: log, cfg: cfg, routes: routes, handlers: handlers, resolver: resolver,
		inflight: make(chan struct{}, cfg.MaxInflight),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fnhook_gateway_calls_total", Help: "Function calls, by outcome (status class) and whether they were cold.",
		}, []string{"code", "cold"}),
		resolves: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fnhook_gateway_resolve_seconds", Help: "Route resolutions through the handler, by outcome.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .5, 1, 5, 20},
		}, []string{"outcome"}),
	}
	reg.MustRegister(g.calls, g.resolves)
	transport := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          4096,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: cfg.CallTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
	g.runProxy = &httputil.ReverseProxy{
		Rewrite:        g.rewriteRun,
		Transport:      transport,
		ModifyResponse: g.modifyRun,
		ErrorHandler:   g.runError,
		// 0: answers with a Content-Length are copied in one go; streamed answers (no
		// length) are still flushed as the function writes them.
		FlushInterval: 0,
	}
	g.mgmtProxy = &httputil.ReverseProxy{
		Rewrite:      g.rewriteMgmt,
		Transport:    transport,
		ErrorHandler: g.mgmtError,
	}
	return g
}

// SetMgmt replaces the mgmt instances /v1 is proxied to.
func (g *Gateway) SetMgmt(addrs []string) {
	a := append([]string(nil), addrs...)
	g.mgmt.Store(&a)
}

// Register adds the gateway's routes to e.
func (g *Gateway) Register(e *echo.Echo) {
	e.Any("/v1/*", g.proxyMgmt)
	e.Any("/run/:tenant/:function", g.run)
	e.Any("/run/:tenant/:function/*", g.run)
}

func (g *Gateway) proxyMgmt(c echo.Context) error {
	addrs := g.mgmt.Load()
	if addrs == nil || len(*addrs) == 0 {
		return fnhook.Errorf(fnhook.CodeMgmtUnavailable, "the management API has no healthy instance right now; retry shortly")
	}
	target := (*addrs)[g.mgmtNext.Add(1)%uint64(len(*addrs))]
	req := c.Request()
	req.Body = http.MaxBytesReader(c.Response(), req.Body, g.cfg.MaxMgmtBody)
	req = req.WithContext(context.WithValue(req.Context(), mgmtTargetKey{}, target))
	g.mgmtProxy.ServeHTTP(c.Response(), req)
	return nil
}

type mgmtTargetKey struct{}

func (g *Gateway) rewriteMgmt(pr *httputil.ProxyRequest) {
	target := pr.In.Context().Value(mgmtTargetKey{}).(string)
	pr.SetURL(&url.URL{Scheme: "http", Host: target})
	pr.Out.Host = pr.In.Host
	pr.SetXForwarded()
}

func (g *Gateway) mgmtError(w http.ResponseWriter, r *http.Request, err error) {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		writeError(w, fnhook.Errorf(fnhook.CodeTooLarge, "request body is larger than %d bytes", g.cfg.MaxMgmtBody))
		return
	}
	g.log.Warn("mgmt proxy failed", "err", err)
	writeError(w, fnhook.Errorf(fnhook.CodeMgmtUnavailable, "the management API did not answer; retry shortly"))
}

// call is the state of one /run call, carried through the proxy in the request context.
type call struct {
	tenant, function string
	rest             string
	route            fnhook.Route
	attempt          int
	replay           []byte // the whole body when it can be replayed, else nil
	replayable       bool
	in               *http.Request // the caller's request, to send again on a stale route
}

type callKey struct{}

func (g *Gateway) run(c echo.Context) error {
	tenant, function := c.Param("tenant"), c.Param("function")
	if !fnhook.NamePattern.MatchString(tenant) || !fnhook.NamePattern.MatchString(function) {
		return fnhook.Errorf(fnhook.CodeNotFound, "no function %q of tenant %q: names are lower-case letters, digits and dashes", function, tenant)
	}
	select {
	case g.inflight <- struct{}{}:
		defer func() { <-g.inflight }()
	default:
		return fnhook.Errorf(fnhook.CodeOverloaded, "the gateway is at its limit of concurrent calls; retry shortly")
	}
	req := c.Request()
	if req.ContentLength > g.cfg.MaxBody {
		return fnhook.Errorf(fnhook.CodeTooLarge, "request body is larger than the limit of %d bytes", g.cfg.MaxBody)
	}
	cl := &call{tenant: tenant, function: function}
	if p := c.Param("*"); p != "" || strings.HasSuffix(req.URL.Path, "/") {
		cl.rest = "/" + p
	}
	body := http.MaxBytesReader(c.Response(), req.Body, g.cfg.MaxBody)
	// Buffer small bodies so that a call on a stale route can be sent again.
	buf, err := io.ReadAll(io.LimitReader(body, g.cfg.ReplayBytes+1))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fnhook.Errorf(fnhook.CodeTooLarge, "request body is larger than the limit of %d bytes", g.cfg.MaxBody)
		}
		return fnhook.Errorf(fnhook.CodeInvalid, "could not read the request body: %v", err)
	}
	if int64(len(buf)) <= g.cfg.ReplayBytes {
		cl.replay, cl.replayable = buf, true
		req.Body = io.NopCloser(bytes.NewReader(buf))
		req.ContentLength = int64(len(buf))
	} else {
		req.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(buf), body), body}
	}

	route, err := g.route(withRequestID(req.Context(), server.RequestID(c)), tenant, function, false)
	if err != nil {
		return err // the handler's answer, with its status and Retry-After
	}
	cl.route = route
	ctx, cancel := context.WithTimeout(req.Context(), g.cfg.CallTimeout)
	defer cancel()
	cl.in = req.WithContext(context.WithValue(ctx, callKey{}, cl))
	g.runProxy.ServeHTTP(c.Response(), cl.in)
	return nil
}

// route returns the route of tenant's function from the cache, or from the owning handler
// (fresh forces the latter).
func (g *Gateway) route(ctx context.Context, tenant, function string, fresh bool) (fnhook.Route, error) {
	if !fresh {
		if r, ok := g.routes.Get(tenant, function); ok {
			return r, nil
		}
	}
	handler, ok := g.handlers.Pick(tenant)
	if !ok {
		return fnhook.Route{}, fnhook.Errorf(fnhook.CodeNoHandler, "no healthy handler is registered; retry shortly")
	}
	start := time.Now()
	r, err := g.resolver.Do(ctx, handler, handlerapi.Request{Tenant: tenant, Function: function, Refresh: fresh, RequestID: requestID(ctx)})
	outcome := "ok"
	if err != nil {
		outcome = fnhook.ErrorCode(err)
	}
	g.resolves.WithLabelValues(outcome).Observe(time.Since(start).Seconds())
	if err != nil {
		var fe *fnhook.Error
		if errors.As(err, &fe) {
			return r, fe
		}
		g.log.Warn("resolve failed", "tenant", tenant, "function", function, "handler", handler, "err", err)
		return r, &fnhook.Error{Code: fnhook.CodeHandlerUnavailable,
			Message: "the handler of this tenant did not answer; retry shortly", Err: err}
	}
	g.routes.Put(tenant, function, r)
	return r, nil
}

func (g *Gateway) rewriteRun(pr *httputil.ProxyRequest) {
	cl := pr.In.Context().Value(callKey{}).(*call)
	u, _ := url.Parse(runnerapi.RunURL(cl.route.Address, cl.function, cl.rest, pr.In.URL.RawQuery))
	pr.Out.URL = u
	pr.Out.Host = u.Host
	// Internal headers a caller might send are never trusted.
	for k := range pr.Out.Header {
		if strings.HasPrefix(strings.ToLower(k), "x-fnhook-") && !strings.EqualFold(k, server.HeaderRequestID) {
			pr.Out.Header.Del(k)
		}
	}
	if a := pr.In.Header.Get("Authorization"); a != "" {
		pr.Out.Header.Set(HeaderTenantAuthorization, a)
	}
	runnerapi.Authorize(pr.Out, cl.route.Token)
	pr.Out.Header.Set(runnerapi.HeaderMinVersion, strconv.Itoa(cl.route.Version))
	pr.Out.Header.Set(server.HeaderRequestID, pr.In.Header.Get(server.HeaderRequestID))
	pr.SetXForwarded()
}

// errStale: the runner does not hold this route any more (replaced, unloaded, older).
var errStale = errors.New("stale route")

func (g *Gateway) modifyRun(resp *http.Response) error {
	cl := resp.Request.Context().Value(callKey{}).(*call)
	code := resp.Header.Get(HeaderRunnerError)
	switch code {
	case fnhook.CodeFunctionNotLoaded, fnhook.CodeStaleVersion, fnhook.CodeUnauthorized, fnhook.CodeNotAssigned:
		if cl.attempt == 0 && cl.replayable {
			resp.Body.Close()
			return errStale
		}
	}
	resp.Header.Del(HeaderRunnerError)
	if code != "" && resp.Header.Get(fnhook.HeaderRetryAfter) == "" {
		// The runner's own error (runtime_unavailable...): the registry's retry policy.
		fnhook.SetRetryAfter(resp.Header, &fnhook.Error{Code: code, Status: resp.StatusCode})
	}
	if cl.route.Cold || cl.attempt > 0 {
		resp.Header.Set(runnerapi.HeaderCold, "1")
	}
	g.calls.WithLabelValues(strconv.Itoa(resp.StatusCode/100)+"xx", strconv.FormatBool(cl.route.Cold || cl.attempt > 0)).Inc()
	return nil
}

func (g *Gateway) runError(w http.ResponseWriter, r *http.Request, err error) {
	cl := r.Context().Value(callKey{}).(*call)
	var opErr *net.OpError
	retryable := errors.Is(err, errStale) || (errors.As(err, &opErr) && opErr.Op == "dial")
	if retryable && cl.attempt == 0 && cl.replayable {
		g.routes.Drop(cl.tenant, cl.function)
		route, rerr := g.route(withRequestID(r.Context(), cl.in.Header.Get(server.HeaderRequestID)), cl.tenant, cl.function, true)
		if rerr != nil {
			writeError(w, rerr)
			return
		}
		next := *cl
		next.attempt, next.route = 1, route
		next.route.Cold = true
		// r is the request as sent to the stale runner: start again from the caller's.
		r2 := cl.in.Clone(context.WithValue(cl.in.Context(), callKey{}, &next))
		r2.Body = io.NopCloser(bytes.NewReader(cl.replay))
		g.runProxy.ServeHTTP(w, r2)
		return
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		writeError(w, fnhook.Errorf(fnhook.CodeTimeout, "the function did not answer within the platform's limit of %s", g.cfg.CallTimeout))
	case errors.Is(err, context.Canceled):
		// The caller went away; nothing to answer.
	case errors.Is(err, errStale):
		g.routes.Drop(cl.tenant, cl.function)
		writeError(w, fnhook.Errorf(fnhook.CodeRunnerUnavailable, "the function's runner changed during the call; retry"))
	default:
		g.routes.Drop(cl.tenant, cl.function)
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, fnhook.Errorf(fnhook.CodeTooLarge, "request body is larger than the limit of %d bytes", g.cfg.MaxBody))
			return
		}
		g.log.Warn("runner call failed", "tenant", cl.tenant, "function", cl.function, "err", err)
		writeError(w, fnhook.Errorf(fnhook.CodeRunnerUnavailable, "the function's runner did not answer; retry shortly"))
	}
	g.calls.WithLabelValues("5xx", "false").Inc()
}

// writeError answers err as the platform's JSON error outside echo (inside the proxy), with
// the status and Retry-After the server's error handler would give it.
func writeError(w http.ResponseWriter, err error) {
	var fe *fnhook.Error
	if !errors.As(err, &fe) {
		fe = &fnhook.Error{Code: fnhook.CodeInternal, Message: "an internal error occurred"}
	}
	fnhook.SetRetryAfter(w.Header(), fe)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(fe.HTTPStatus())
	_ = json.NewEncoder(w).Encode(fnhook.ErrorBody{Error: &fnhook.Error{Code: fe.Code, Message: fe.Message}})
}

type requestIDKey struct{}

func withRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}
