package api

import (
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	fnhook "github.com/fnhook/fnhook/libs"
	"github.com/fnhook/fnhook/services/mgmt/resolver"
)

// functionBody is what a tenant PUTs. Pointers tell "absent" from zero.
type functionBody struct {
	Code          *string           `json:"code"`
	Dependencies  map[string]string `json:"dependencies"`
	Configuration map[string]string `json:"configuration"`
	TimeoutMs     *int              `json:"timeoutMs"`
}

// defaultTimeoutMs is a function's timeout when it sets none (capped by the tenant's ceiling).
const defaultTimeoutMs = 10000

// bodyMargin is room in a function body for JSON quoting and the other fields.
const bodyMargin = 64 << 10

// configKeyPattern is what configuration keys look like (environment-variable style).
var configKeyPattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)

// redacted replaces every configuration value in answers.
const redacted = "***"

func functionParams(c echo.Context) (tenant, name string, err error) {
	if tenant, err = tenantParam(c); err != nil {
		return "", "", err
	}
	name = c.Param("name")
	if !fnhook.NamePattern.MatchString(name) {
		return "", "", fnhook.Errorf(fnhook.CodeInvalid, "function name %q is invalid: use 1 to 63 lowercase letters, digits and dashes, starting with a letter or digit", name)
	}
	return tenant, name, nil
}

// ifMatch parses the optional If-Match header: a version, bare or quoted as an ETag.
func ifMatch(c echo.Context) (version int, given bool, err error) {
	h := strings.TrimSpace(c.Request().Header.Get("If-Match"))
	if h == "" {
		return 0, false, nil
	}
	v := strings.Trim(strings.TrimPrefix(h, "W/"), `"`)
	n, perr := strconv.Atoi(v)
	if perr != nil || n < 1 {
		return 0, true, fnhook.Errorf(fnhook.CodeInvalid, "If-Match must be a function version such as 3 (got %.40q)", h)
	}
	return n, true, nil
}

func etag(version int) string { return `"` + strconv.Itoa(version) + `"` }

// validate checks b against the tenant's limits and returns the function's timeout.
func validate(b functionBody, l fnhook.Limits) (timeoutMs int, err error) {
	if b.Code == nil {
		return 0, fnhook.Errorf(fnhook.CodeInvalid, "field code is required: the function's JavaScript source")
	}
	if strings.TrimSpace(*b.Code) == "" {
		return 0, fnhook.Errorf(fnhook.CodeInvalid, "field code must not be empty")
	}
	if len(*b.Code) > l.MaxCodeBytes {
		return 0, fnhook.Errorf(fnhook.CodeTooLarge, "code is %d bytes; the tenant's limit is %d bytes (maxCodeBytes)", len(*b.Code), l.MaxCodeBytes)
	}
	if len(b.Dependencies) > l.MaxDependencies {
		return 0, fnhook.Errorf(fnhook.CodeInvalid, "%d dependencies; the tenant's limit is %d (maxDependencies)", len(b.Dependencies), l.MaxDependencies)
	}
	for _, name := range sortedKeys(b.Dependencies) {
		if err := resolver.ValidateName(name); err != nil {
			return 0, fnhook.Errorf(fnhook.CodeInvalid, "%s", err)
		}
		if err := resolver.ValidateSpec(name, b.Dependencies[name]); err != nil {
			return 0, fnhook.Errorf(fnhook.CodeInvalid, "%s", err)
		}
	}
	size := 0
	for _, k := range sortedKeys(b.Configuration) {
		if !configKeyPattern.MatchString(k) {
			return 0, fnhook.Errorf(fnhook.CodeInvalid, "configuration key %.80q is invalid: use letters, digits and _, not starting with a digit, at most 128 characters", k)
		}
		size += len(k) + len(b.Configuration[k])
	}
	if size > l.MaxConfigBytes {
		return 0, fnhook.Errorf(fnhook.CodeTooLarge, "configuration is %d bytes (keys and values); the tenant's limit is %d bytes (maxConfigBytes)", size, l.MaxConfigBytes)
	}
	timeoutMs = min(defaultTimeoutMs, l.MaxTimeoutMs)
	if b.TimeoutMs != nil {
		timeoutMs = *b.TimeoutMs
		if timeoutMs < 1 || timeoutMs > l.MaxTimeoutMs {
			return 0, fnhook.Errorf(fnhook.CodeInvalid, "timeoutMs must be between 1 and %d (the tenant's maxTimeoutMs), not %d", l.MaxTimeoutMs, timeoutMs)
		}
	}
	return timeoutMs, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// present returns f as the API shows it: configuration values redacted, code only when
// withCode, maps never null.
func present(f fnhook.Function, withCode bool) fnhook.Function {
	if !withCode {
		f.Code = ""
	}
	cfg := make(map[string]string, len(f.Configuration))
	for k := range f.Configuration {
		cfg[k] = redacted
	}
	f.Configuration = cfg
	if f.Dependencies == nil {
		f.Dependencies = map[string]string{}
	}
	if f.ResolvedDependencies == nil {
		f.ResolvedDependencies = map[string]string{}
	}
	return f
}

func (a *API) putFunction(c echo.Context) error {
	tenant, name, err := functionParams(c)
	if err != nil {
		return err
	}
	want, conditional, err := ifMatch(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	t, err := a.store.GetTenant(ctx, tenant)
	if err != nil {
		return err
	}
	limits := t.Limits.WithDefaults(a.defaults)
	var body functionBody
	limit := int64(2*limits.MaxCodeBytes + 2*limits.MaxConfigBytes + bodyMargin)
	if err := decodeBody(c, limit, &body, false); err != nil {
		return err
	}
	timeoutMs, err := validate(body, limits)
	if err != nil {
		return err
	}

	cur, err := a.store.GetFunction(ctx, tenant, name)
	exists := err == nil
	if err != nil && fnhook.ErrorCode(err) != fnhook.CodeNotFound {
		return err
	}
	switch {
	case conditional && !exists:
		return fnhook.Errorf(fnhook.CodePreconditionFailed, "function %q does not exist, so it cannot be at version %d (If-Match)", name, want)
	case conditional && cur.Version != want:
		return fnhook.Errorf(fnhook.CodePreconditionFailed, "function %q is at version %d, not %d (If-Match)", name, cur.Version, want)
	}
	if !exists {
		n, err := a.store.CountFunctions(ctx, tenant)
		if err != nil {
			return err
		}
		if n >= limits.MaxFunctions {
			return fnhook.Errorf(fnhook.CodeOverQuota, "tenant %q already has %d functions, its limit (maxFunctions); delete one first", tenant, n)
		}
	}

	if _, err := a.checker.Check(ctx, *body.Code); err != nil {
		return err
	}
	deps := body.Dependencies
	if deps == nil {
		deps = map[string]string{}
	}
	resolved, err := a.resolver.Resolve(ctx, deps)
	if err != nil {
		return err
	}
	plan, err := a.builds.Plan(ctx, resolved)
	if err != nil {
		return err
	}

	now := time.Now().UTC()
	f := fnhook.Function{
		Tenant: tenant, Name: name, Code: *body.Code,
		Dependencies: deps, ResolvedDependencies: resolved, Configuration: body.Configuration,
		TimeoutMs: timeoutMs, Status: plan.Status, Pending: plan.Pending, Error: plan.Error,
		CreatedAt: now, UpdatedAt: now,
	}
	if f.Configuration == nil {
		f.Configuration = map[string]string{}
	}
	status := http.StatusOK
	if exists {
		f.Version, f.CreatedAt = cur.Version+1, cur.CreatedAt
		err = a.store.PutFunction(ctx, f, cur.Version)
	} else {
		status = http.StatusCreated
		f.Version, err = a.store.CreateFunction(ctx, f)
	}
	if fnhook.ErrorCode(err) == fnhook.CodeConflict {
		if conditional {
			return fnhook.Errorf(fnhook.CodePreconditionFailed, "function %q changed while this update was processed; it is no longer at version %d (If-Match)", name, want)
		}
		return fnhook.Errorf(fnhook.CodeConflict, "function %q was changed by another request at the same time; read it and retry (send If-Match: <version> to make the update conditional)", name)
	}
	if err != nil {
		return err
	}
	a.builds.FunctionChanged(ctx, fnhook.FunctionChanged{Tenant: tenant, Function: name, Version: f.Version})
	if f.Status == fnhook.StatusBuilding {
		if tracked, err := a.builds.Track(ctx, f); err != nil {
			a.log.Warn("tracking builds failed; convergence will finish it", "tenant", tenant, "function", name, "err", err)
		} else {
			f = tracked
		}
	}
	a.saved.WithLabelValues(f.Status).Inc()
	a.log.Info("function saved", "tenant", tenant, "function", name, "version", f.Version, "status", f.Status)
	c.Response().Header().Set("ETag", etag(f.Version))
	return c.JSON(status, present(f, false))
}

func (a *API) getFunction(c echo.Context) error {
	tenant, name, err := functionParams(c)
	if err != nil {
		return err
	}
	f, err := a.store.GetFunction(c.Request().Context(), tenant, name)
	if err != nil {
		return err
	}
	c.Response().Header().Set("ETag", etag(f.Version))
	return c.JSON(http.StatusOK, present(f, true))
}

// List page bounds.
const (
	defaultPage = 50
	maxPage     = 100
)

func (a *API) listFunctions(c echo.Context) error {
	tenant, err := tenantParam(c)
	if err != nil {
		return err
	}
	limit := defaultPage
	if s := c.QueryParam("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxPage {
			return fnhook.Errorf(fnhook.CodeInvalid, "limit must be a number from 1 to %d, not %.20q", maxPage, s)
		}
		limit = n
	}
	after := c.QueryParam("after")
	if after != "" && !fnhook.NamePattern.MatchString(after) {
		return fnhook.Errorf(fnhook.CodeInvalid, "after must be a function name (the next value of the previous page), not %.80q", after)
	}
	ctx := c.Request().Context()
	if _, err := a.store.GetTenant(ctx, tenant); err != nil {
		return err
	}
	// One more than asked tells whether another page follows.
	fns, _, err := a.store.ListFunctions(ctx, tenant, limit+1, after)
	if err != nil {
		return err
	}
	resp := struct {
		Functions []fnhook.Function `json:"functions"`
		Next      string            `json:"next,omitempty"`
	}{Functions: []fnhook.Function{}}
	if len(fns) > limit {
		fns = fns[:limit]
		resp.Next = fns[limit-1].Name
	}
	for _, f := range fns {
		resp.Functions = append(resp.Functions, present(f, false))
	}
	return c.JSON(http.StatusOK, resp)
}

func (a *API) deleteFunction(c echo.Context) error {
	tenant, name, err := functionParams(c)
	if err != nil {
		return err
	}
	want, conditional, err := ifMatch(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	f, err := a.store.GetFunction(ctx, tenant, name)
	if err != nil {
		return err
	}
	if conditional && f.Version != want {
		return fnhook.Errorf(fnhook.CodePreconditionFailed, "function %q is at version %d, not %d (If-Match)", name, f.Version, want)
	}
	err = a.store.DeleteFunctionAt(ctx, tenant, name, f.Version)
	if fnhook.ErrorCode(err) == fnhook.CodeConflict {
		if conditional {
			return fnhook.Errorf(fnhook.CodePreconditionFailed, "function %q changed while it was being deleted; it is no longer at version %d (If-Match)", name, want)
		}
		return fnhook.Errorf(fnhook.CodeConflict, "function %q was changed by another request at the same time; read it and retry", name)
	}
	if err != nil {
		return fmt.Errorf("delete function %s/%s: %w", tenant, name, err)
	}
	a.builds.Forget(ctx, f)
	a.builds.FunctionChanged(ctx, fnhook.FunctionChanged{Tenant: tenant, Function: name, Version: f.Version, Deleted: true})
	a.log.Info("function deleted", "tenant", tenant, "function", name, "version", f.Version)
	return c.NoContent(http.StatusNoContent)
}
