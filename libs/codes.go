package fnhook

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The registry of error codes: every code a fnhook service answers (the runner included),
// with its HTTP status and its retry policy. An *Error takes its status and its Retry-After
// from here, so no service sets either by hand. A new code is added here, with a test
// (codes_test.go) that keeps the table whole.

// Codes every service may answer.
const (
	CodeInvalid            = "invalid"             // 400: bad input; the message says which
	CodeUnauthorized       = "unauthorized"        // 401: no, unknown or revoked token
	CodeForbidden          = "forbidden"           // 403: a valid token without the right
	CodeNotFound           = "not_found"           // 404: no such route, tenant, function or token
	CodeMethodNotAllowed   = "method_not_allowed"  // 405
	CodeConflict           = "conflict"            // 409: changed concurrently; read and retry
	CodePreconditionFailed = "precondition_failed" // 412: If-Match does not hold
	CodeTooLarge           = "too_large"           // 413: body, code or configuration over a limit
	CodeUnprocessable      = "unprocessable"       // 422: well formed but cannot be acted on
	CodeFailedDependency   = "failed_dependency"   // 424: something the request needs failed
	CodeOverQuota          = "over_quota"          // 429: a tenant limit is reached; waiting will not help
	CodeInternal           = "internal"            // 500: a platform fault, logged with its cause
	CodeNotImplemented     = "not_implemented"     // 501
	CodeBadGateway         = "bad_gateway"         // 502: an upstream answered something unusable
	CodeUnavailable        = "unavailable"         // 503: a dependency could not answer in time; retry
	CodeTimeout            = "timeout"             // 504: the function or platform ran out of time
)

// Codes of the management API (mgmt).
const (
	// CodeSyntaxError: node refuses to parse the function's code; the message has the line.
	CodeSyntaxError = "syntax_error"
	// CodeUnresolvableDependency: a dependency names no package or no matching version.
	CodeUnresolvableDependency = "unresolvable_dependency"
)

// Codes the gateway answers for itself.
const (
	// CodeOverloaded: the gateway is at its limit of concurrent calls.
	CodeOverloaded = "overloaded"
	// CodeMgmtUnavailable: no management instance is healthy, or the one tried did not answer.
	CodeMgmtUnavailable = "mgmt_unavailable"
	// CodeNoHandler: no handler is registered in Consul.
	CodeNoHandler = "no_handler"
	// CodeHandlerUnavailable: the handler owning the tenant did not answer.
	CodeHandlerUnavailable = "handler_unavailable"
	// CodeRunnerUnavailable: the function's runner did not answer, or changed during the call.
	CodeRunnerUnavailable = "runner_unavailable"
)

// Codes of the handler's resolve API, which the gateway relays to the caller.
const (
	// CodeFunctionBuilding: the function's modules are still being built.
	CodeFunctionBuilding = "function_building"
	// CodeFunctionFailed: the function cannot run (a module failed to build, or it does not
	// compile); the message says why.
	CodeFunctionFailed = "function_failed"
	// CodeNoCapacity: no runner could be had in time on the tenant's node.
	CodeNoCapacity = "no_capacity"
	// CodeModuleUnavailable: a built module could not be installed on the node.
	CodeModuleUnavailable = "module_unavailable"
)

// Codes of the runner's answers to a call, which the gateway relays to the caller (the
// runner marks them with X-Fnhook-Error).
const (
	// CodeFunctionError: the function threw or called back with an error.
	CodeFunctionError = "function_error"
	// CodeInvalidResult: the function returned something that is not a response.
	CodeInvalidResult = "invalid_result"
	// CodeFunctionCrashed: the function's runtime crashed during the call; it is restarting.
	CodeFunctionCrashed = "function_crashed"
	// CodeRuntimeUnavailable: the function's runtime is restarting.
	CodeRuntimeUnavailable = "runtime_unavailable"
	// CodeFunctionNotLoaded: the runner does not hold the function (the gateway resolves
	// again and retries once).
	CodeFunctionNotLoaded = "function_not_loaded"
	// CodeStaleVersion: the runner holds an older version than the route asks for (the
	// gateway resolves again and retries once).
	CodeStaleVersion = "stale_version"
)

// Codes of the runner protocol, answered to the handler only.
const (
	CodeAlreadyAssigned   = "already_assigned"   // 409: the runner holds another tenant
	CodeNotAssigned       = "not_assigned"       // 409: the runner holds no tenant yet
	CodeCompileError      = "compile_error"      // 422: the function's code does not load
	CodeModuleMissing     = "module_missing"     // 424: a dependency is not in the module cache
	CodeTooManyFunctions  = "too_many_functions" // 429: the runner holds its most functions
	CodeLoadFailed        = "load_failed"        // 500: loading failed for another reason
	CodeInvalidFunction   = "invalid_function"   // 400: a load request that is not a function
	CodeInvalidDependency = "invalid_dependency" // 400: a dependency without an exact version
	CodeInvalidTenant     = "invalid_tenant"     // 400: an assignment with a bad tenant name
	CodeInvalidName       = "invalid_name"       // 400: a bad function name in a path
	CodeInvalidHeader     = "invalid_header"     // 400: a bad X-Fnhook-Min-Version
	CodeInvalidJSON       = "invalid_json"       // 400: a protocol body that is not JSON
	CodeInvalidQuery      = "invalid_query"      // 400: a query parameter out of range
	CodeInvalidCursor     = "invalid_cursor"     // 400: a log cursor beyond the newest line
	CodeAborted           = "aborted"            // 400: the request was cut while read
)

// DefaultRetryAfter is the Retry-After of a 503 whose code has no policy of its own (a
// status override, or a code from outside the registry): every 503 asks to retry.
const DefaultRetryAfter = time.Second

// HeaderRetryAfter is the header that carries a retry policy, in whole seconds.
const HeaderRetryAfter = "Retry-After"

// CodeSpec is what the registry holds of one code.
type CodeSpec struct {
	Code string
	// Status is the HTTP status every answer with this code has.
	Status int
	// RetryAfter, when positive, is how long a caller should wait before trying again; it
	// travels as Retry-After. Zero: trying again as is will not help (or not soon).
	RetryAfter time.Duration
}

// codes is the registry. Every 503 has a RetryAfter.
var codes = []CodeSpec{
	{Code: CodeInvalid, Status: http.StatusBadRequest},
	{Code: CodeUnauthorized, Status: http.StatusUnauthorized},
	{Code: CodeForbidden, Status: http.StatusForbidden},
	{Code: CodeNotFound, Status: http.StatusNotFound},
	{Code: CodeMethodNotAllowed, Status: http.StatusMethodNotAllowed},
	{Code: CodeConflict, Status: http.StatusConflict},
	{Code: CodePreconditionFailed, Status: http.StatusPreconditionFailed},
	{Code: CodeTooLarge, Status: http.StatusRequestEntityTooLarge},
	{Code: CodeUnprocessable, Status: http.StatusUnprocessableEntity},
	{Code: CodeFailedDependency, Status: http.StatusFailedDependency},
	{Code: CodeOverQuota, Status: http.StatusTooManyRequests},
	{Code: CodeInternal, Status: http.StatusInternalServerError},
	{Code: CodeNotImplemented, Status: http.StatusNotImplemented},
	{Code: CodeBadGateway, Status: http.StatusBadGateway},
	{Code: CodeUnavailable, Status: http.StatusServiceUnavailable, RetryAfter: time.Second},
	{Code: CodeTimeout, Status: http.StatusGatewayTimeout},

	{Code: CodeSyntaxError, Status: http.StatusUnprocessableEntity},
	{Code: CodeUnresolvableDependency, Status: http.StatusUnprocessableEntity},

	{Code: CodeOverloaded, Status: http.StatusServiceUnavailable, RetryAfter: time.Second},
	{Code: CodeMgmtUnavailable, Status: http.StatusServiceUnavailable, RetryAfter: time.Second},
	{Code: CodeNoHandler, Status: http.StatusServiceUnavailable, RetryAfter: time.Second},
	{Code: CodeHandlerUnavailable, Status: http.StatusBadGateway},
	{Code: CodeRunnerUnavailable, Status: http.StatusBadGateway},

	{Code: CodeFunctionBuilding, Status: http.StatusServiceUnavailable, RetryAfter: time.Second},
	{Code: CodeFunctionFailed, Status: http.StatusFailedDependency},
	{Code: CodeNoCapacity, Status: http.StatusServiceUnavailable, RetryAfter: time.Second},
	{Code: CodeModuleUnavailable, Status: http.StatusServiceUnavailable, RetryAfter: time.Second},

	{Code: CodeFunctionError, Status: http.StatusInternalServerError},
	{Code: CodeInvalidResult, Status: http.StatusInternalServerError},
	{Code: CodeFunctionCrashed, Status: http.StatusBadGateway},
	{Code: CodeRuntimeUnavailable, Status: http.StatusServiceUnavailable, RetryAfter: time.Second},
	{Code: CodeFunctionNotLoaded, Status: http.StatusNotFound},
	{Code: CodeStaleVersion, Status: http.StatusConflict},

	{Code: CodeAlreadyAssigned, Status: http.StatusConflict},
	{Code: CodeNotAssigned, Status: http.StatusConflict},
	{Code: CodeCompileError, Status: http.StatusUnprocessableEntity},
	{Code: CodeModuleMissing, Status: http.StatusFailedDependency},
	{Code: CodeTooManyFunctions, Status: http.StatusTooManyRequests},
	{Code: CodeLoadFailed, Status: http.StatusInternalServerError},
	{Code: CodeInvalidFunction, Status: http.StatusBadRequest},
	{Code: CodeInvalidDependency, Status: http.StatusBadRequest},
	{Code: CodeInvalidTenant, Status: http.StatusBadRequest},
	{Code: CodeInvalidName, Status: http.StatusBadRequest},
	{Code: CodeInvalidHeader, Status: http.StatusBadRequest},
	{Code: CodeInvalidJSON, Status: http.StatusBadRequest},
	{Code: CodeInvalidQuery, Status: http.StatusBadRequest},
	{Code: CodeInvalidCursor, Status: http.StatusBadRequest},
	{Code: CodeAborted, Status: http.StatusBadRequest},
}

var codeIndex = func() map[string]CodeSpec {
	m := make(map[string]CodeSpec, len(codes))
	for _, s := range codes {
		m[s.Code] = s
	}
	return m
}()

// CodeInfo returns the registry's entry for code, and false when code is not registered.
func CodeInfo(code string) (CodeSpec, bool) {
	s, ok := codeIndex[code]
	return s, ok
}

// Codes returns every registered code, in the registry's order (a copy).
func Codes() []CodeSpec { return append([]CodeSpec(nil), codes...) }

// RetryAfterOf returns how long the caller should wait before retrying err (that of the
// first *Error in its chain), or 0 when it should not.
func RetryAfterOf(err error) time.Duration {
	if e := asError(err); e != nil {
		return e.RetryAfter()
	}
	return 0
}

// SetRetryAfter sets Retry-After in h from err's retry policy (see Error.RetryAfter), and
// leaves h alone when err has none.
func SetRetryAfter(h http.Header, err error) {
	if d := RetryAfterOf(err); d > 0 {
		h.Set(HeaderRetryAfter, FormatRetryAfter(d))
	}
}

// FormatRetryAfter is d as a Retry-After value: whole seconds, rounded up.
func FormatRetryAfter(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)
}

// maxRetryAfter bounds what ParseRetryAfter accepts from an upstream.
const maxRetryAfter = time.Hour

// ParseRetryAfter reads a Retry-After value in seconds (at most an hour); it returns 0 for
// an absent, invalid or HTTP-date value (no fnhook service sends dates).
func ParseRetryAfter(v string) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n <= 0 {
		return 0
	}
	if d := time.Duration(n) * time.Second; n < int(maxRetryAfter/time.Second) {
		return d
	}
	return maxRetryAfter
}
