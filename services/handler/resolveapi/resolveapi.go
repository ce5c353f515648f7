// Package resolveapi serves the handler's resolve API (libs/handlerapi is its client):
// POST /v1/resolve {"tenant","function"} -> fnhook.Route, behind the bearer token derived
// from the handler secret. Errors answer with the status and Retry-After of their code in
// the registry (package fnhook).
package resolveapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	fnhook "github.com/fnhook/fnhook/libs"
	"github.com/fnhook/fnhook/libs/handlerapi"
)

// Resolver answers routes (tenants.Table).
type Resolver interface {
	Resolve(ctx context.Context, tenant, function string, refresh bool) (fnhook.Route, error)
}

// maxBody bounds a resolve request.
const maxBody = 4 << 10

// timeout bounds one resolve (waiting for a runner is ~20 s at most).
const timeout = 45 * time.Second

// Mount adds the resolve route to e. secret is the handler secret.
func Mount(e *echo.Echo, r Resolver, secret string) {
	want := sha256.Sum256([]byte(handlerapi.ResolveToken(secret)))
	e.POST(handlerapi.Path, func(c echo.Context) error {
		if !authorized(c.Request().Header.Get("Authorization"), want) {
			return fnhook.Errorf(fnhook.CodeUnauthorized, "missing or invalid resolve token")
		}
		var req handlerapi.Request
		body, err := io.ReadAll(io.LimitReader(c.Request().Body, maxBody+1))
		if err != nil {
			return fnhook.Errorf(fnhook.CodeInvalid, "cannot read the request body")
		}
		if len(body) > maxBody {
			return fnhook.Errorf(fnhook.CodeTooLarge, "request body larger than %d bytes", maxBody)
		}
		if err := json.Unmarshal(body, &req); err != nil {
			return fnhook.Errorf(fnhook.CodeInvalid, "request body must be {\"tenant\", \"function\", \"refresh\"?}")
		}
		if !fnhook.NamePattern.MatchString(req.Tenant) || !fnhook.NamePattern.MatchString(req.Function) {
			return fnhook.Errorf(fnhook.CodeInvalid, "tenant and function must match %s", fnhook.NamePattern)
		}
		ctx, cancel := context.WithTimeout(c.Request().Context(), timeout)
		defer cancel()
		route, err := r.Resolve(ctx, req.Tenant, req.Function, req.Refresh)
		if err != nil {
			return err // the server's error handler sets the code's status and Retry-After
		}
		return c.JSON(http.StatusOK, route)
	})
}

// authorized compares the bearer token in constant time (both sides hashed first, so not
// even its length leaks).
func authorized(header string, want [32]byte) bool {
	token, ok := strings.CutPrefix(header, "Bearer ")
	if !ok {
		token = ""
	}
	got := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}
