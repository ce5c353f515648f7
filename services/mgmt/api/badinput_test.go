package api

import (
	"net/http"
	"strings"
	"testing"
)

// TestBadInput: every kind of bad request answers the right status, code and a message
// that says what is wrong.
func TestBadInput(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	in := b.start(t)
	tenant, token, _ := in.tenantWithToken(t, map[string]int{
		"maxCodeBytes": 1024, "maxDependencies": 2, "maxConfigBytes": 64, "maxFunctions": 1, "maxTimeoutMs": 20000,
	})
	fns := "/v1/tenants/" + tenant + "/functions/"
	must(t, in.call(t, "PUT", fns+"existing", token, map[string]any{"code": helloCJS}), http.StatusCreated)
	existing := fns + "existing"
	code := func(extra string) string { return `{"code":"module.exports = () => 1;"` + extra + `}` }

	cases := []struct {
		name, method, path string
		body               any
		headers            []string
		status             int
		code, message      string
	}{
		{"invalid function name", "PUT", fns + "Bad_Name", code(""), nil, 400, "invalid", `function name "Bad_Name" is invalid`},
		{"invalid tenant name", "PUT", "/v1/tenants/UPPER", `{}`, nil, 400, "invalid", `tenant name "UPPER" is invalid`},
		{"not json", "PUT", existing, `{"code":`, nil, 400, "invalid", "not valid JSON"},
		{"json syntax", "PUT", existing, `{"code" "x"}`, nil, 400, "invalid", "not valid JSON at byte"},
		{"array body", "PUT", existing, `[]`, nil, 400, "invalid", "must be a JSON object, not an array"},
		{"empty body", "PUT", existing, ``, nil, 400, "invalid", "body is empty"},
		{"trailing data", "PUT", existing, code("") + ` {}`, nil, 400, "invalid", "nothing after it"},
		{"unknown field", "PUT", existing, code(`,"handler":"x"`), nil, 400, "invalid", `unknown field "handler"; allowed fields: code, dependencies, configuration, timeoutMs`},
		{"timeout string", "PUT", existing, code(`,"timeoutMs":"5000"`), nil, 400, "invalid", "field timeoutMs must be a number, not a string"},
		{"timeout fraction", "PUT", existing, code(`,"timeoutMs":1.5`), nil, 400, "invalid", "field timeoutMs must be a whole number"},
		{"timeout zero", "PUT", existing, code(`,"timeoutMs":0`), nil, 400, "invalid", "timeoutMs must be between 1 and 20000"},
		{"timeout over ceiling", "PUT", existing, code(`,"timeoutMs":20001`), nil, 400, "invalid", "the tenant's maxTimeoutMs"},
		{"code missing", "PUT", existing, `{"timeoutMs":100}`, nil, 400, "invalid", "field code is required"},
		{"code blank", "PUT", existing, `{"code":"  \n "}`, nil, 400, "invalid", "code must not be empty"},
		{"code number", "PUT", existing, `{"code":42}`, nil, 400, "invalid", "field code must be a string, not a number"},
		{"dependencies array", "PUT", existing, code(`,"dependencies":["dayjs"]`), nil, 400, "invalid", "field dependencies must be an object, not an array"},
		{"dependency version number", "PUT", existing, code(`,"dependencies":{"dayjs":1}`), nil, 400, "invalid", "field dependencies must be an object whose values are strings"},
		{"configuration number", "PUT", existing, code(`,"configuration":{"PORT":8080}`), nil, 400, "invalid", "field configuration must be an object whose values are strings"},
		{"configuration key", "PUT", existing, code(`,"configuration":{"1BAD":"x"}`), nil, 400, "invalid", `configuration key "1BAD" is invalid`},
		{"configuration too large", "PUT", existing, code(`,"configuration":{"K":"` + strings.Repeat("v", 100) + `"}`), nil, 413, "too_large", "maxConfigBytes"},
		{"uppercase dependency", "PUT", existing, code(`,"dependencies":{"Lodash":"^4"}`), nil, 400, "invalid", "must be lowercase"},
		{"dot dependency", "PUT", existing, code(`,"dependencies":{".hidden":"1"}`), nil, 400, "invalid", "must not start with . or _"},
		{"bad scoped dependency", "PUT", existing, code(`,"dependencies":{"@scope":"1"}`), nil, 400, "invalid", "@scope/name"},
		{"git dependency", "PUT", existing, code(`,"dependencies":{"x":"git+https://github.com/a/b.git"}`), nil, 400, "invalid", "git, file, URL or alias spec"},
		{"file dependency", "PUT", existing, code(`,"dependencies":{"x":"file:../x"}`), nil, 400, "invalid", "git, file, URL or alias spec"},
		{"github shorthand", "PUT", existing, code(`,"dependencies":{"x":"user/repo"}`), nil, 400, "invalid", "GitHub shorthand"},
		{"garbage range", "PUT", existing, code(`,"dependencies":{"x":"$$$"}`), nil, 400, "invalid", "neither a semver range"},
		{"too many dependencies", "PUT", existing, code(`,"dependencies":{"a":"1","b":"1","c":"1"}`), nil, 400, "invalid", "3 dependencies; the tenant's limit is 2 (maxDependencies)"},
		{"code too large", "PUT", existing, `{"code":"` + strings.Repeat("x", 2000) + `"}`, nil, 413, "too_large", "code is 2000 bytes; the tenant's limit is 1024 bytes"},
		{"body too large", "PUT", existing, `{"code":"` + strings.Repeat("x", 1<<20) + `"}`, nil, 413, "too_large", "request body is larger than"},
		{"syntax error", "PUT", existing, `{"code":"module.exports = () => {\n  return 1 +;\n};\n"}`, nil, 422, "syntax_error", "line 2: SyntaxError: Unexpected token ';'"},
		{"esm syntax error", "PUT", existing, `{"code":"import x from 'y';\nexport default x x;\n"}`, nil, 422, "syntax_error", "line 2: SyntaxError"},
		{"unknown package", "PUT", existing, code(`,"dependencies":{"fnhook-no-such-package-zz9":"^1.0.0"}`), nil, 422, "unresolvable_dependency", "fnhook-no-such-package-zz9: no such package"},
		{"no satisfying version", "PUT", existing, code(`,"dependencies":{"dayjs":"^99.0.0"}`), nil, 422, "unresolvable_dependency", `no published version of dayjs satisfies "^99.0.0"`},
		{"unknown dist-tag", "PUT", existing, code(`,"dependencies":{"dayjs":"nightly-zz"}`), nil, 422, "unresolvable_dependency", `dayjs has no dist-tag "nightly-zz"`},
		{"over quota", "PUT", fns + "another", code(""), nil, 429, "over_quota", "already has 1 functions, its limit (maxFunctions)"},
		{"if-match garbage", "PUT", existing, code(""), []string{"If-Match", "abc"}, 400, "invalid", "If-Match must be a function version"},
		{"if-match stale", "PUT", existing, code(""), []string{"If-Match", "7"}, 412, "precondition_failed", "is at version 1, not 7"},
		{"if-match missing function", "PUT", fns + "ghost", code(""), []string{"If-Match", "1"}, 412, "precondition_failed", "does not exist"},
		{"tenant not found", "PUT", "/v1/tenants/nobody-zz9/functions/f", code(""), nil, 404, "not_found", `tenant "nobody-zz9" does not exist`},
		{"function not found", "GET", fns + "ghost", nil, nil, 404, "not_found", `function "ghost"`},
		{"list limit zero", "GET", "/v1/tenants/" + tenant + "/functions?limit=0", nil, nil, 400, "invalid", "limit must be a number from 1 to 100"},
		{"list limit huge", "GET", "/v1/tenants/" + tenant + "/functions?limit=1000", nil, nil, 400, "invalid", "limit must be a number from 1 to 100"},
		{"list after invalid", "GET", "/v1/tenants/" + tenant + "/functions?after=NOPE", nil, nil, 400, "invalid", "after must be a function name"},
		{"limits negative", "PUT", "/v1/tenants/" + tenant, `{"limits":{"maxCodeBytes":-1}}`, nil, 400, "invalid", "limits.maxCodeBytes must be between 1 and 4194304"},
		{"limits over maximum", "PUT", "/v1/tenants/" + tenant, `{"limits":{"maxFunctions":100000}}`, nil, 400, "invalid", "limits.maxFunctions must be between 1 and 10000"},
		{"limits unknown field", "PUT", "/v1/tenants/" + tenant, `{"limits":{"cpu":2}}`, nil, 400, "invalid", `unknown field "cpu"`},
		{"limits type", "PUT", "/v1/tenants/" + tenant, `{"limits":{"maxFunctions":"10"}}`, nil, 400, "invalid", "field limits.maxFunctions must be a number, not a string"},
		{"token id invalid", "DELETE", "/v1/tenants/" + tenant + "/tokens/xyz", nil, nil, 400, "invalid", "token id"},
		{"token unknown", "DELETE", "/v1/tenants/" + tenant + "/tokens/0123456789abcdef0123456789abcdef", nil, nil, 404, "not_found", "does not exist"},
		{"token for missing tenant", "POST", "/v1/tenants/nobody-zz9/tokens", nil, nil, 404, "not_found", "does not exist"},
		{"unknown route", "GET", "/v1/nothing", nil, nil, 404, "not_found", "no such route"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			tok := token
			if !strings.HasPrefix(c.path, "/v1/tenants/"+tenant+"/functions") {
				tok = in.admin
			}
			r := in.call(t, c.method, c.path, tok, c.body, c.headers...)
			if r.status != c.status || r.errCode() != c.code || !strings.Contains(r.errMessage(), c.message) {
				t.Errorf("%s %s: %d %s\nwant %d %s with %q", c.method, c.path, r.status, r.raw, c.status, c.code, c.message)
			}
		})
	}
	// Nothing above changed the function.
	r := must(t, in.call(t, "GET", existing, token, nil), http.StatusOK)
	if r.num("version") != 1 {
		t.Errorf("a refused request changed the function: %s", r.raw)
	}
}
