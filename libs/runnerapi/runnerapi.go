// Package runnerapi is the Go client of the runner protocol (SPEC section 7): what the
// handler says to the Node runner inside a warm container, and what tests use to call a
// runner directly. Every call but Health carries the runner's own token.
//
// A runner's token is hex(HMAC-SHA256(handlerSecret, runnerJobID)) (see Token): the
// handler puts it into the runner job's environment and recomputes it after a restart.
package runnerapi

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	fnhook "github.com/fnhook/fnhook/libs"
)

// Headers of the run requests and answers.
const (
	// HeaderMinVersion asks the runner to refuse a call (409 stale_version) when the loaded
	// version of the function is lower than its value.
	HeaderMinVersion = "X-Fnhook-Min-Version"
	// HeaderRequestID carries the request id to the function's ctx and logs.
	HeaderRequestID = "X-Fnhook-Request-Id"
	// HeaderVersion is set on every run answer: the function version that served it.
	HeaderVersion = "X-Fnhook-Version"
	// HeaderCold is set by the gateway on answers that needed an assignment or a load.
	HeaderCold = "X-Fnhook-Cold"
)

// Runner states as GET /healthz reports them.
const (
	StateIdle     = "idle"
	StateAssigned = "assigned"
)

// Error codes the runner answers that callers act on.
const (
	CodeAlreadyAssigned   = "already_assigned"
	CodeNotAssigned       = "not_assigned"
	CodeStaleVersion      = "stale_version"
	CodeFunctionNotLoaded = "function_not_loaded"
	CodeCompileError      = "compile_error"
	CodeModuleMissing     = "module_missing"
)

// maxAnswer bounds what the client reads of any protocol answer (logs included).
const maxAnswer = 4 << 20

// Token returns the token of the runner whose Nomad job is jobID.
func Token(secret, jobID string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(jobID))
	return hex.EncodeToString(m.Sum(nil))
}

// Runner is one runner as a caller reaches it.
type Runner struct {
	// Address is host:port of the runner's mapped port.
	Address string
	// Token opens that runner only.
	Token string
}

// Health is the answer of GET /healthz.
type Health struct {
	State string `json:"state"`
}

// State is the answer of GET /_fnhook/state: what a restarted handler needs to recover
// its view of a runner.
type State struct {
	// Tenant is empty while the runner is idle.
	Tenant string `json:"tenant"`
	// Functions maps each loaded function to its version.
	Functions map[string]int `json:"functions"`
	// IdleMs is how long ago the last run request finished (or the runner was assigned,
	// if none ran); nil when the runner does not report it.
	IdleMs *int64 `json:"idleMs,omitempty"`
	// Inflight counts run requests in progress; nil when the runner does not report it.
	Inflight *int `json:"inflight,omitempty"`
}

// Function is what PUT /_fnhook/functions/{name} loads.
type Function struct {
	Version       int               `json:"version"`
	Code          string            `json:"code"`
	Dependencies  map[string]string `json:"dependencies"`
	Configuration map[string]string `json:"configuration"`
	TimeoutMs     int               `json:"timeoutMs,omitempty"`
}

// Loaded is the answer of a load: the version now loaded (which may be newer than the one
// asked for: a runner never goes back) and how long the load took there.
type Loaded struct {
	Name    string  `json:"name"`
	Version int     `json:"version"`
	LoadMs  float64 `json:"loadMs"`
}

// LogLine is one console line of a function.
type LogLine struct {
	TS    string `json:"ts"`
	Level string `json:"level"`
	Msg   string `json:"msg"`
}

// Client calls runners. It is safe for concurrent use.
type Client struct {
	http *http.Client
}

// New returns a Client using hc, or a client with short, protocol-sized timeouts when hc
// is nil.
func New(hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{
			Timeout: 30 * time.Second,
			Transport: &http.Transport{
				DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
				MaxIdleConnsPerHost: 4,
				IdleConnTimeout:     60 * time.Second,
			},
		}
	}
	return &Client{http: hc}
}

// Health asks a runner for its state without a token. It fails when the runner does not
// answer 200 with a known state.
func (c *Client) Health(ctx context.Context, address string) (Health, error) {
	var h Health
	err := c.do(ctx, http.MethodGet, Runner{Address: address}, "/healthz", nil, &h)
	if err == nil && h.State != StateIdle && h.State != StateAssigned {
		err = fmt.Errorf("runner %s: unknown health state %q", address, h.State)
	}
	return h, err
}

// Assign binds the runner to tenant for life. A runner already assigned answers a conflict
// error with code already_assigned.
func (c *Client) Assign(ctx context.Context, r Runner, tenant string) error {
	return c.do(ctx, http.MethodPost, r, "/_fnhook/assign", map[string]string{"tenant": tenant}, nil)
}

// State returns the runner's tenant and loaded functions.
func (c *Client) State(ctx context.Context, r Runner) (State, error) {
	var s State
	err := c.do(ctx, http.MethodGet, r, "/_fnhook/state", nil, &s)
	return s, err
}

// Load loads a version of function name. A compile error is an *fnhook.Error with status
// 422 and the runner's message.
func (c *Client) Load(ctx context.Context, r Runner, name string, f Function) (Loaded, error) {
	if f.Dependencies == nil {
		f.Dependencies = map[string]string{}
	}
	if f.Configuration == nil {
		f.Configuration = map[string]string{}
	}
	var l Loaded
	err := c.do(ctx, http.MethodPut, r, "/_fnhook/functions/"+url.PathEscape(name), f, &l)
	return l, err
}

// Unload removes function name; a function that is not loaded is an error with code
// function_not_loaded.
func (c *Client) Unload(ctx context.Context, r Runner, name string) error {
	return c.do(ctx, http.MethodDelete, r, "/_fnhook/functions/"+url.PathEscape(name), nil, nil)
}

// Logs returns the last console lines of function name.
func (c *Client) Logs(ctx context.Context, r Runner, name string) ([]LogLine, error) {
	var out struct {
		Lines []LogLine `json:"lines"`
	}
	err := c.do(ctx, http.MethodGet, r, "/_fnhook/logs/"+url.PathEscape(name), nil, &out)
	return out.Lines, err
}

// Sources of a runner's log lines (LogEntry.Source).
const (
	// LogSourceFunction: console.* of tenant code, its uncaught errors and failed calls.
	LogSourceFunction = "function"
	// LogSourceStdout and LogSourceStderr: raw output of the process that runs tenant code
	// (tenant code writing there, the runtime's own fatal messages such as out of memory).
	LogSourceStdout = "stdout"
	LogSourceStderr = "stderr"
	// LogSourceRunner: the runner itself (timeouts, restarts, loads); trustworthy, unlike the
	// others, whose fields tenant code can make up.
	LogSourceRunner = "runner"
)

// MaxLogWait is the longest wait a runner accepts for LogsAfter; it stays below the default
// client's 30 s timeout.
const MaxLogWait = 25 * time.Second

// LogEntry is one line of a runner's log stream (GET /_fnhook/logs).
type LogEntry struct {
	// Seq numbers the runner's lines from 1, in the order the runner got them; a gap is
	// lines that were lost (see LogBatch.Missed).
	Seq int64 `json:"seq"`
	// TS is when the line was logged (RFC 3339 with milliseconds, UTC).
	TS string `json:"ts"`
	// Source is one of the LogSource constants.
	Source string `json:"source"`
	// Level is log, info, warn or error.
	Level string `json:"level"`
	// Function, Version and RequestID say which call logged the line, when known.
	Function  string `json:"fn,omitempty"`
	Version   int    `json:"version,omitempty"`
	RequestID string `json:"requestId,omitempty"`
	// Msg is the text, at most 4 KiB of UTF-8 (longer ones end in " [truncated]").
	Msg string `json:"msg"`
	// Attrs holds the fields of a runner line (e.g. a restart's reason).
	Attrs map[string]any `json:"attrs,omitempty"`
}

// LogBatch is one answer of the log stream.
type LogBatch struct {
	// Lines are the lines after the cursor that was asked for, oldest first.
	Lines []LogEntry `json:"lines"`
	// Next is the cursor to pass to the next LogsAfter.
	Next int64 `json:"next"`
	// Missed counts lines between the cursor and Next that are gone: evicted from the
	// runner's bounded buffer before they were read, or dropped before they got into it.
	Missed int64 `json:"missed"`
	// Dropped counts every line the runner dropped before buffering it, since it started.
	Dropped int64 `json:"dropped"`
}

// LogsAfter reads the runner's log stream after cursor after (0: from the oldest line it
// keeps). When there is nothing newer it waits up to wait (capped at MaxLogWait) for a line
// and answers as soon as one comes; wait 0 answers at once. The runner answers an error with
// code invalid_cursor when after is beyond its newest line (a cursor from another runner).
func (c *Client) LogsAfter(ctx context.Context, r Runner, after int64, wait time.Duration) (LogBatch, error) {
	wait = min(max(wait, 0), MaxLogWait)
	path := fmt.Sprintf("/_fnhook/logs?after=%d&wait=%s", after, strconv.FormatFloat(wait.Seconds(), 'f', 3, 64))
	var b LogBatch
	err := c.do(ctx, http.MethodGet, r, path, nil, &b)
	return b, err
}

// FollowLogs reads the runner's log stream from cursor after until ctx ends or a read fails,
// long-polling with wait (MaxLogWait when not positive), and calls fn with each batch that has
// lines or missed ones (fn runs on the caller's goroutine; an error from it stops the loop).
// It returns the cursor reached and why it stopped (ctx.Err() when ctx ended), so a caller
// can resume from there. A read fails once the runner is gone: its job ended.
func (c *Client) FollowLogs(ctx context.Context, r Runner, after int64, wait time.Duration, fn func(LogBatch) error) (int64, error) {
	if wait <= 0 {
		wait = MaxLogWait
	}
	// A runner that is shutting down answers at once with nothing: pause rather than spin.
	const emptyPause = 100 * time.Millisecond
	for {
		b, err := c.LogsAfter(ctx, r, after, wait)
		if err != nil {
			if ctx.Err() != nil {
				return after, ctx.Err()
			}
			return after, err
		}
		if len(b.Lines) > 0 || b.Missed > 0 {
			if err := fn(b); err != nil {
				return b.Next, err
			}
		}
		after = b.Next
		if len(b.Lines) == 0 {
			t := time.NewTimer(emptyPause)
			select {
			case <-ctx.Done():
				t.Stop()
				return after, ctx.Err()
			case <-t.C:
			}
		}
		if err := ctx.Err(); err != nil {
			return after, err
		}
	}
}

// RunURL is the URL that invokes function name on the runner at address; rest is the path
// after the function name ("" or starting with "/") and rawQuery the query without "?".
func RunURL(address, name, rest, rawQuery string) string {
	u := "http://" + address + "/_fnhook/run/" + url.PathEscape(name) + rest
	if rawQuery != "" {
		u += "?" + rawQuery
	}
	return u
}

// Authorize sets the runner token on a request built by the caller (a run request).
func Authorize(req *http.Request, token string) {
	req.Header.Set("Authorization", "Bearer "+token)
}

// IsCode reports whether err is a runner answer with the given error code.
func IsCode(err error, code string) bool {
	var e *fnhook.Error
	return errors.As(err, &e) && e.Code == code
}

func (c *Client) do(ctx context.Context, method string, r Runner, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("runner %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+r.Address+path, body)
	if err != nil {
		return fmt.Errorf("runner %s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if r.Token != "" {
		Authorize(req, r.Token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("runner %s %s %s: %w", r.Address, method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("runner %s %s %s: read answer: %w", r.Address, method, path, err)
	}
	if resp.StatusCode >= 300 {
		return decodeError(resp.StatusCode, raw)
	}
	if out == nil || len(raw) == 0 {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("runner %s %s %s: decode answer: %w", r.Address, method, path, err)
	}
	return nil
}

// decodeError turns a protocol error answer into an *fnhook.Error keeping the runner's
// code, message and status.
func decodeError(status int, raw []byte) error {
	var eb struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(raw, &eb) != nil || eb.Error.Code == "" {
		msg := strings.TrimSpace(string(raw))
		if len(msg) > 200 {
			msg = msg[:200]
		}
		return &fnhook.Error{Code: fmt.Sprintf("http_%d", status), Status: status,
			Message: fmt.Sprintf("runner answered %d: %s", status, msg)}
	}
	return &fnhook.Error{Code: eb.Error.Code, Status: status, Message: eb.Error.Message}
}
