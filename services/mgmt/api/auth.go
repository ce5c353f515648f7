package api

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"strings"

	"github.com/labstack/echo/v4"

	fnhook "github.com/fnhook/fnhook/libs"
	"github.com/fnhook/fnhook/libs/store"
)

// tokenPrefix starts every tenant token: fnh.<tenant>.<id>.<secret>.
const tokenPrefix = "fnh"

// principal is who a request acts as: the admin, or one tenant.
type principal struct {
	admin  bool
	tenant string
}

const principalKey = "fnhook.principal"

type authenticator struct {
	store *store.Store
	// adminHash is sha256 of the admin key: comparing fixed-size hashes keeps the
	// comparison constant-time whatever the presented key's length.
	adminHash [32]byte
}

func newAuthenticator(s *store.Store, adminKey string) authenticator {
	return authenticator{store: s, adminHash: sha256.Sum256([]byte(adminKey))}
}

func unauthorized(c echo.Context, msg string) error {
	c.Response().Header().Set("WWW-Authenticate", `Bearer realm="fnhook"`)
	return fnhook.Errorf(fnhook.CodeUnauthorized, "%s", msg)
}

// authenticate finds the request's principal from its bearer token; no token, an unknown
// one or a revoked one is 401. Tokens never appear in logs or messages.
func (a *API) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Request().Header.Get(echo.HeaderAuthorization)
		scheme, tok, ok := strings.Cut(h, " ")
		if h == "" || !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
			return unauthorized(c, "send the admin key or a tenant token as Authorization: Bearer <token>")
		}
		p, err := a.auth.check(c, strings.TrimSpace(tok))
		if err != nil {
			return err
		}
		c.Set(principalKey, p)
		return next(c)
	}
}

func (au authenticator) check(c echo.Context, tok string) (principal, error) {
	given := sha256.Sum256([]byte(tok))
	if subtle.ConstantTimeCompare(given[:], au.adminHash[:]) == 1 {
		return principal{admin: true}, nil
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 4 || parts[0] != tokenPrefix || !fnhook.NamePattern.MatchString(parts[1]) || !validTokenID(parts[2]) {
		return principal{}, unauthorized(c, "the token is not valid")
	}
	stored, err := au.store.GetToken(c.Request().Context(), parts[1], parts[2])
	if fnhook.ErrorCode(err) == fnhook.CodeNotFound {
		return principal{}, unauthorized(c, "the token is not valid (unknown or revoked)")
	}
	if err != nil {
		return principal{}, err
	}
	sum := sha256.Sum256([]byte(parts[3]))
	want, err := hex.DecodeString(stored.Hash)
	if err != nil || subtle.ConstantTimeCompare(sum[:], want) != 1 {
		return principal{}, unauthorized(c, "the token is not valid (unknown or revoked)")
	}
	return principal{tenant: stored.Tenant}, nil
}

func validTokenID(id string) bool {
	if len(id) != 32 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil && strings.ToLower(id) == id
}

func principalOf(c echo.Context) principal {
	p, _ := c.Get(principalKey).(principal)
	return p
}

// adminOnly lets only the admin key through.
func adminOnly(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if !principalOf(c).admin {
			return fnhook.Errorf(fnhook.CodeForbidden, "this route needs the admin key")
		}
		return next(c)
	}
}

// tenantOnly lets the admin and the path's own tenant through.
func tenantOnly(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		p := principalOf(c)
		if !p.admin && p.tenant != c.Param("tenant") {
			return fnhook.Errorf(fnhook.CodeForbidden, "this token belongs to tenant %q and cannot act on tenant %q", p.tenant, c.Param("tenant"))
		}
		return next(c)
	}
}

// newToken returns a fresh token for tenant: its id, the full token to show once, and the
// hash of its secret to store.
func newToken(tenant string) (id, token, hash string, err error) {
	var idb [16]byte
	var secret [32]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return "", "", "", err
	}
	if _, err := rand.Read(secret[:]); err != nil {
		return "", "", "", err
	}
	id = hex.EncodeToString(idb[:])
	s := base64.RawURLEncoding.EncodeToString(secret[:])
	sum := sha256.Sum256([]byte(s))
	return id, tokenPrefix + "." + tenant + "." + id + "." + s, hex.EncodeToString(sum[:]), nil
}
