// Package platform is the bench's client of the fnhook platform under test: the
// management API and /run through the gateway, and the handler's pool gauges.
package platform

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	fnhook "github.com/fnhook/fnhook/libs"
)

// maxAnswer bounds what the client reads of any answer.
const maxAnswer = 4 << 20

// Client talks to one gateway (management API and runs) and one handler's metrics.
type Client struct {
	gateway    string
	adminKey   string
	metricsURL string
	http       *http.Client
}

// New returns a client of the gateway at gateway (e.g. http://127.0.0.1:8080), acting with
// the admin key, reading pool gauges from metricsURL (e.g. http://127.0.0.1:8082/metrics).
func New(gateway, adminKey, metricsURL string) *Client {
	return &Client{
		gateway:    strings.TrimRight(gateway, "/"),
		adminKey:   adminKey,
		metricsURL: metricsURL,
		http: &http.Client{
			Timeout:   90 * time.Second,
			Transport: &http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: 90 * time.Second, DisableCompression: true},
		},
	}
}

// APIError is an answer of the platform that was not what the call expected.
type APIError struct {
	Method, Path string
	Status       int
	Code         string
	Message      string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s %s: %d %s: %s", e.Method, e.Path, e.Status, e.Code, e.Message)
}

// RunURL is the gateway URL of a function.
func (c *Client) RunURL(tenant, function string) string {
	return c.gateway + "/run/" + tenant + "/" + function
}

// PutTenant creates (or updates) a tenant with default limits.
func (c *Client) PutTenant(ctx context.Context, tenant string) error {
	return c.do(ctx, http.MethodPut, "/v1/tenants/"+tenant, map[string]any{}, nil, http.StatusOK, http.StatusCreated)
}

// Tenants lists the names of every tenant.
func (c *Client) Tenants(ctx context.Context) ([]string, error) {
	var page struct {
		Tenants []struct {
			Name string `json:"name"`
		} `json:"tenants"`
	}
	if err := c.do(ctx, http.MethodGet, "/v1/tenants", nil, &page, http.StatusOK); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(page.Tenants))
	for _, t := range page.Tenants {
		names = append(names, t.Name)
	}
	return names, nil
}

// DeleteTenant deletes a tenant, its functions and tokens; a missing tenant is not an error.
func (c *Client) DeleteTenant(ctx context.Context, tenant string) error {
	return c.do(ctx, http.MethodDelete, "/v1/tenants/"+tenant, nil, nil, http.StatusNoContent, http.StatusOK, http.StatusNotFound)
}

// FunctionBody is the body of a function PUT.
type FunctionBody struct {
	Code         string            `json:"code"`
	Dependencies map[string]string `json:"dependencies,omitempty"`
}

// PutFunction creates or replaces a function and returns the platform's answer.
func (c *Client) PutFunction(ctx context.Context, tenant, name string, body FunctionBody) (fnhook.Function, error) {
	var f fnhook.Function
	err := c.do(ctx, http.MethodPut, "/v1/tenants/"+tenant+"/functions/"+name, body, &f, http.StatusOK, http.StatusCreated)
	return f, err
}

// GetFunction reads a function.
func (c *Client) GetFunction(ctx context.Context, tenant, name string) (fnhook.Function, error) {
	var f fnhook.Function
	err := c.do(ctx, http.MethodGet, "/v1/tenants/"+tenant+"/functions/"+name, nil, &f, http.StatusOK)
	return f, err
}

// WaitSettled polls the function every `every` until its status is no longer building
// (ready or failed), and returns it.
func (c *Client) WaitSettled(ctx context.Context, tenant, name string, every time.Duration) (fnhook.Function, error) {
	var last fnhook.Function
	for {
		f, err := c.GetFunction(ctx, tenant, name)
		if err != nil && ctx.Err() != nil && last.Status == fnhook.StatusBuilding {
			// The deadline struck during a poll: say what was still pending at the last one.
			return last, fmt.Errorf("function %s/%s still building (pending %v): %w", tenant, name, last.Pending, ctx.Err())
		}
		if err != nil {
			return f, err
		}
		last = f
		if f.Status != fnhook.StatusBuilding {
			return f, nil
		}
		select {
		case <-ctx.Done():
			return f, fmt.Errorf("function %s/%s still building (pending %v): %w", tenant, name, f.Pending, ctx.Err())
		case <-time.After(every):
		}
	}
}

// Call is the outcome of one run through the gateway.
type Call struct {
	Status int
	// Code is the error code of an answer other than 2xx that carries a JSON error
	// ({"error":{"code":...}}), else "".
	Code string
	// RetryAfter is the answer's Retry-After header.
	RetryAfter string
	Cold       bool
	Latency    time.Duration
	Body       []byte
}

// Run calls a function with GET through the gateway and times it up to the last byte of
// the answer. Any status is returned as a Call; only transport failures are errors.
func (c *Client) Run(ctx context.Context, tenant, function string) (Call, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.RunURL(tenant, function), nil)
	if err != nil {
		return Call{}, err
	}
	t0 := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		return Call{}, fmt.Errorf("run %s/%s: %w", tenant, function, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	lat := time.Since(t0)
	if err != nil {
		return Call{}, fmt.Errorf("run %s/%s: read answer: %w", tenant, function, err)
	}
	call := Call{Status: resp.StatusCode, RetryAfter: resp.Header.Get("Retry-After"),
		Cold: resp.Header.Get("x-fnhook-cold") == "1", Latency: lat, Body: body}
	if call.Status >= 300 {
		call.Code = ErrorCode(body)
	}
	return call, nil
}

// ErrorCode is the code of a JSON error answer ({"error":{"code":"no_capacity",...}}), or
// "" when body is not one.
func ErrorCode(body []byte) string {
	var eb struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &eb) != nil {
		return ""
	}
	return eb.Error.Code
}

// Pool is the warm pool of one handler, from its gauges.
type Pool struct {
	Idle, Starting, Assigned int
}

// Pool reads the handler's pool gauges from its /metrics.
func (c *Client) Pool(ctx context.Context) (Pool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.metricsURL, nil)
	if err != nil {
		return Pool{}, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return Pool{}, fmt.Errorf("handler metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Pool{}, fmt.Errorf("handler metrics: status %d", resp.StatusCode)
	}
	return ParsePool(io.LimitReader(resp.Body, maxAnswer))
}

// The handler's pool gauges (services/handler/pool).
const (
	gaugeIdle     = "fnhook_handler_pool_idle"
	gaugeStarting = "fnhook_handler_pool_starting"
	gaugeAssigned = "fnhook_handler_pool_assigned"
)

// ParsePool reads the pool gauges from a Prometheus text exposition.
func ParsePool(r io.Reader) (Pool, error) {
	var p Pool
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		var dst *int
		switch name {
		case gaugeIdle:
			dst = &p.Idle
		case gaugeStarting:
			dst = &p.Starting
		case gaugeAssigned:
			dst = &p.Assigned
		default:
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return p, fmt.Errorf("gauge %s: %w", name, err)
		}
		*dst = int(v)
		seen[name] = true
	}
	if err := sc.Err(); err != nil {
		return p, fmt.Errorf("read metrics: %w", err)
	}
	if !seen[gaugeIdle] || !seen[gaugeStarting] {
		return p, fmt.Errorf("the handler's metrics have no %s or %s gauge", gaugeIdle, gaugeStarting)
	}
	return p, nil
}

// do sends a management request as admin and decodes a wanted answer into out.
func (c *Client) do(ctx context.Context, method, path string, in, out any, want ...int) error {
	var body io.Reader
	if in != nil {
		raw, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.gateway+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.adminKey)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	for _, w := range want {
		if resp.StatusCode == w {
			if out != nil && len(raw) > 0 && resp.StatusCode < 300 {
				if err := json.Unmarshal(raw, out); err != nil {
					return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
				}
			}
			return nil
		}
	}
	e := &APIError{Method: method, Path: path, Status: resp.StatusCode}
	var eb struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if json.Unmarshal(raw, &eb) == nil && eb.Error.Code != "" {
		e.Code, e.Message = eb.Error.Code, eb.Error.Message
	} else {
		e.Message = fmt.Sprintf("%.300s", raw)
	}
	return e
}
