// Package api is fnhook's management API: tenants, their tokens and their functions, over
// HTTP (echo) under /v1. It validates every request at the edge, stores records through
// libs/store with conditional writes, and hands module builds to the builds tracker.
package api

import (
	"context"
	"log/slog"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	fnhook "github.com/fnhook/fnhook/libs"
	"github.com/fnhook/fnhook/libs/store"
	"github.com/fnhook/fnhook/services/mgmt/builds"
)

// SyntaxChecker parses a function's code; it returns the module kind ("commonjs" or
// "module") or an *fnhook.Error with the syntax error.
type SyntaxChecker interface {
	Check(ctx context.Context, code string) (kind string, err error)
}

// DependencyResolver turns dependency ranges into exact versions.
type DependencyResolver interface {
	Resolve(ctx context.Context, deps map[string]string) (map[string]string, error)
}

// Config holds what the API needs.
type Config struct {
	Store    *store.Store
	Builds   *builds.Tracker
	Checker  SyntaxChecker
	Resolver DependencyResolver
	// AdminKey may do everything (at least 16 characters; checked by the caller's config).
	AdminKey string
	// Defaults are the limits of a tenant that sets none.
	Defaults fnhook.Limits
	Log      *slog.Logger
	// Metrics receives the API's counters (nil: not exported).
	Metrics prometheus.Registerer
}

// API serves the management routes. It is safe for concurrent use.
type API struct {
	store    *store.Store
	builds   *builds.Tracker
	checker  SyntaxChecker
	resolver DependencyResolver
	auth     authenticator
	defaults fnhook.Limits
	log      *slog.Logger

	saved        *prometheus.CounterVec
	tokensIssued prometheus.Counter
}

// New returns the API.
func New(c Config) *API {
	a := &API{
		store: c.Store, builds: c.Builds, checker: c.Checker, resolver: c.Resolver,
		auth: newAuthenticator(c.Store, c.AdminKey), defaults: c.Defaults.WithDefaults(fnhook.DefaultLimits), log: c.Log,
		saved: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fnhook_mgmt_functions_saved_total", Help: "Functions created or updated, by the status they answered with.",
		}, []string{"status"}),
		tokensIssued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fnhook_mgmt_tokens_issued_total", Help: "Tenant tokens issued.",
		}),
	}
	if c.Metrics != nil {
		c.Metrics.MustRegister(a.saved, a.tokensIssued)
	}
	return a
}

// Register adds the /v1 routes to e.
func (a *API) Register(e *echo.Echo) {
	v1 := e.Group("/v1", a.authenticate)
	v1.GET("/tenants", a.listTenants, adminOnly)
	v1.PUT("/tenants/:tenant", a.putTenant, adminOnly)
	v1.GET("/tenants/:tenant", a.getTenant, adminOnly)
	v1.DELETE("/tenants/:tenant", a.deleteTenant, adminOnly)
	v1.POST("/tenants/:tenant/tokens", a.issueToken, adminOnly)
	v1.DELETE("/tenants/:tenant/tokens/:id", a.revokeToken, adminOnly)
	v1.GET("/tenants/:tenant/functions", a.listFunctions, tenantOnly)
	v1.PUT("/tenants/:tenant/functions/:name", a.putFunction, tenantOnly)
	v1.GET("/tenants/:tenant/functions/:name", a.getFunction, tenantOnly)
	v1.DELETE("/tenants/:tenant/functions/:name", a.deleteFunction, tenantOnly)
}
