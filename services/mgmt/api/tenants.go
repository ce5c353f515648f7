package api

import (
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/labstack/echo/v4"

	fnhook "github.com/fnhook/fnhook/libs"
)

// smallBody bounds the bodies of the tenant and token routes.
const smallBody = 64 << 10

// limitBounds are the sane maxima of each tenant limit (the minimum is 1; 0 or absent
// means the platform default).
var limitBounds = []struct {
	field    string
	min, max int
	get      func(*fnhook.Limits) int
}{
	{"maxCodeBytes", 1, 4 << 20, func(l *fnhook.Limits) int { return l.MaxCodeBytes }},
	{"maxFunctions", 1, 10000, func(l *fnhook.Limits) int { return l.MaxFunctions }},
	{"maxDependencies", 1, 256, func(l *fnhook.Limits) int { return l.MaxDependencies }},
	{"maxTimeoutMs", 1, 15 * 60 * 1000, func(l *fnhook.Limits) int { return l.MaxTimeoutMs }},
	{"memoryMB", 32, 16384, func(l *fnhook.Limits) int { return l.MemoryMB }},
	{"maxConfigBytes", 1, 1 << 20, func(l *fnhook.Limits) int { return l.MaxConfigBytes }},
}

func validateLimits(l fnhook.Limits) error {
	for _, b := range limitBounds {
		if v := b.get(&l); v != 0 && (v < b.min || v > b.max) {
			return fnhook.Errorf(fnhook.CodeInvalid, "limits.%s must be between %d and %d (0 or absent: the platform default)", b.field, b.min, b.max)
		}
	}
	return nil
}

type tenantBody struct {
	Limits fnhook.Limits `json:"limits"`
}

// tenantView is a tenant as the API shows it: the limits it set and those in force.
type tenantView struct {
	fnhook.Tenant
	EffectiveLimits fnhook.Limits `json:"effectiveLimits"`
}

func (a *API) view(t fnhook.Tenant) tenantView {
	return tenantView{Tenant: t, EffectiveLimits: t.Limits.WithDefaults(a.defaults)}
}

func tenantParam(c echo.Context) (string, error) {
	t := c.Param("tenant")
	if !fnhook.NamePattern.MatchString(t) {
		return "", fnhook.Errorf(fnhook.CodeInvalid, "tenant name %q is invalid: use 1 to 63 lowercase letters, digits and dashes, starting with a letter or digit", t)
	}
	return t, nil
}

func (a *API) putTenant(c echo.Context) error {
	name, err := tenantParam(c)
	if err != nil {
		return err
	}
	var body tenantBody
	if err := decodeBody(c, smallBody, &body, true); err != nil {
		return err
	}
	if err := validateLimits(body.Limits); err != nil {
		return err
	}
	ctx := c.Request().Context()
	now := time.Now().UTC()
	t, err := a.store.GetTenant(ctx, name)
	status := http.StatusOK
	switch {
	case fnhook.ErrorCode(err) == fnhook.CodeNotFound:
		t, status = fnhook.Tenant{Name: name, CreatedAt: now}, http.StatusCreated
	case err != nil:
		return err
	}
	t.Limits, t.UpdatedAt = body.Limits, now
	if err := a.store.PutTenant(ctx, t); err != nil {
		return err
	}
	return c.JSON(status, a.view(t))
}

func (a *API) getTenant(c echo.Context) error {
	name, err := tenantParam(c)
	if err != nil {
		return err
	}
	t, err := a.store.GetTenant(c.Request().Context(), name)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, a.view(t))
}

func (a *API) listTenants(c echo.Context) error {
	ts, err := a.store.ListTenants(c.Request().Context())
	if err != nil {
		return err
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].Name < ts[j].Name })
	out := make([]tenantView, len(ts))
	for i, t := range ts {
		out[i] = a.view(t)
	}
	return c.JSON(http.StatusOK, map[string]any{"tenants": out})
}

func (a *API) deleteTenant(c echo.Context) error {
	name, err := tenantParam(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if _, err := a.store.GetTenant(ctx, name); err != nil {
		return err
	}
	fns, err := a.store.DeleteTenant(ctx, name)
	if err != nil {
		return fmt.Errorf("delete tenant %s: %w", name, err)
	}
	for _, f := range fns {
		a.builds.Forget(ctx, f)
	}
	a.builds.TenantDeleted(ctx, name)
	a.log.Info("tenant deleted", "tenant", name, "functions", len(fns))
	return c.NoContent(http.StatusNoContent)
}

// tokenView is an issued token; Token is shown only in the answer to its creation.
type tokenView struct {
	ID        string    `json:"id"`
	Token     string    `json:"token"`
	Tenant    string    `json:"tenant"`
	CreatedAt time.Time `json:"createdAt"`
}

func (a *API) issueToken(c echo.Context) error {
	name, err := tenantParam(c)
	if err != nil {
		return err
	}
	var body struct{}
	if err := decodeBody(c, smallBody, &body, true); err != nil {
		return err
	}
	ctx := c.Request().Context()
	if _, err := a.store.GetTenant(ctx, name); err != nil {
		return err
	}
	id, token, hash, err := newToken(name)
	if err != nil {
		return fmt.Errorf("generate token: %w", err)
	}
	t := fnhook.Token{ID: id, Tenant: name, Hash: hash, CreatedAt: time.Now().UTC()}
	if err := a.store.PutToken(ctx, t); err != nil {
		return err
	}
	a.tokensIssued.Inc()
	a.log.Info("token issued", "tenant", name, "token_id", id)
	return c.JSON(http.StatusCreated, tokenView{ID: id, Token: token, Tenant: name, CreatedAt: t.CreatedAt})
}

func (a *API) revokeToken(c echo.Context) error {
	name, err := tenantParam(c)
	if err != nil {
		return err
	}
	id := c.Param("id")
	if !validTokenID(id) {
		return fnhook.Errorf(fnhook.CodeInvalid, "token id %q is invalid: it is 32 lowercase hex digits", id)
	}
	if err := a.store.DeleteToken(c.Request().Context(), name, id); err != nil {
		return err
	}
	a.log.Info("token revoked", "tenant", name, "token_id", id)
	return c.NoContent(http.StatusNoContent)
}
