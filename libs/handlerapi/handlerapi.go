// Package handlerapi is the Go client of the handler's resolve API: the gateway asks the
// handler that owns a tenant where that tenant's function runs right now.
//
//	POST /v1/resolve {"tenant","function"} -> 200 fnhook.Route
//	404 not_found, 424 function_failed, 429 over_quota, 413 too_large,
//	503 function_building, no_capacity, module_unavailable or unavailable (with Retry-After)
//
// Statuses and retry policies are the code registry's (package fnhook).
//
// The API is protected by a bearer token derived from the handler secret (ResolveToken),
// which the gateway and the handler both hold.
package handlerapi

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	fnhook "github.com/fnhook/fnhook/libs"
)

// Path is the route of the resolve API.
const Path = "/v1/resolve"

// maxAnswer bounds what the client reads of an answer.
const maxAnswer = 64 << 10

// ResolveToken is the bearer token of the resolve API: hex(HMAC-SHA256(secret, "resolve")).
func ResolveToken(secret string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("resolve"))
	return hex.EncodeToString(m.Sum(nil))
}

// Request is the body of a resolve.
type Request struct {
	Tenant   string `json:"tenant"`
	Function string `json:"function"`
	// Refresh says the route the handler gave last did not work (the runner did not
	// answer, or answered function_not_loaded or stale_version): the handler then asks
	// the runner for its state instead of trusting what it recorded.
	Refresh bool `json:"refresh,omitempty"`
	// RequestID, when set, travels as the X-Fnhook-Request-Id header, so the handler's logs
	// carry the id of the call that caused the resolve.
	RequestID string `json:"-"`
}

// Client calls handlers. It is safe for concurrent use.
type Client struct {
	http  *http.Client
	token string
}

// New returns a Client that authenticates with the token derived from secret. hc may be
// nil for a client with timeouts fit for resolves (which may wait for a runner ~20 s).
func New(secret string, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{
			Timeout: 40 * time.Second,
			Transport: &http.Transport{
				DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
				MaxIdleConnsPerHost: 16,
				IdleConnTimeout:     60 * time.Second,
			},
		}
	}
	return &Client{http: hc, token: ResolveToken(secret)}
}

// Resolve asks the handler at address (host:port, or a URL with scheme) for the route of
// tenant's function. Error answers are returned as *fnhook.Error with the handler's code,
// message, status and Retry-After, so that the gateway passes them on as they are.
func (c *Client) Resolve(ctx context.Context, address, tenant, function string) (fnhook.Route, error) {
	return c.Do(ctx, address, Request{Tenant: tenant, Function: function})
}

// Do sends a resolve request as is (Resolve with Refresh set, for the retry after a route
// that did not work).
func (c *Client) Do(ctx context.Context, address string, r Request) (fnhook.Route, error) {
	var route fnhook.Route
	tenant, function := r.Tenant, r.Function
	body, _ := json.Marshal(r)
	base := address
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(base, "/")+Path, bytes.NewReader(body))
	if err != nil {
		return route, fmt.Errorf("resolve %s/%s at %s: %w", tenant, function, address, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.token)
	if r.RequestID != "" {
		req.Header.Set("X-Fnhook-Request-Id", r.RequestID)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return route, fmt.Errorf("resolve %s/%s at %s: %w", tenant, function, address, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return route, fmt.Errorf("resolve %s/%s at %s: read answer: %w", tenant, function, address, err)
	}
	if resp.StatusCode != http.StatusOK {
		return route, decodeError(resp, raw)
	}
	if err := json.Unmarshal(raw, &route); err != nil {
		return route, fmt.Errorf("resolve %s/%s at %s: decode answer: %w", tenant, function, address, err)
	}
	return route, nil
}

func decodeError(resp *http.Response, raw []byte) *fnhook.Error {
	var eb fnhook.ErrorBody
	fe := &fnhook.Error{Status: resp.StatusCode, Retry: fnhook.ParseRetryAfter(resp.Header.Get(fnhook.HeaderRetryAfter))}
	if json.Unmarshal(raw, &eb) == nil && eb.Error != nil && eb.Error.Code != "" {
		fe.Code, fe.Message = eb.Error.Code, eb.Error.Message
	} else {
		fe.Code = fnhook.CodeBadGateway
		fe.Message = fmt.Sprintf("handler answered %d", resp.StatusCode)
	}
	return fe
}
