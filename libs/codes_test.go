package fnhook_test

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	fnhook "github.com/fnhook/fnhook/libs"
)

var snakeCase = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

func TestRegistry(t *testing.T) {
	seen := map[string]bool{}
	codes := fnhook.Codes()
	if len(codes) == 0 {
		t.Fatal("the registry is empty")
	}
	for _, s := range codes {
		if !snakeCase.MatchString(s.Code) {
			t.Errorf("code %q is not snake_case", s.Code)
		}
		if seen[s.Code] {
			t.Errorf("code %q is registered twice", s.Code)
		}
		seen[s.Code] = true
		if s.Status < 400 || s.Status > 599 || http.StatusText(s.Status) == "" {
			t.Errorf("code %q has status %d, not an HTTP error status", s.Code, s.Status)
		}
		if s.Status == http.StatusServiceUnavailable && s.RetryAfter <= 0 {
			t.Errorf("code %q is a 503 without a Retry-After", s.Code)
		}
		// Retry-After means "the same request will work later": a 503, or a 429 of a rate
		// limit. Anything else asks the caller to change the request, or is a fault.
		if s.RetryAfter > 0 && s.Status != http.StatusServiceUnavailable && s.Status != http.StatusTooManyRequests {
			t.Errorf("code %q (%d) has a Retry-After; only 503 and 429 may", s.Code, s.Status)
		}
		if s.RetryAfter%time.Second != 0 {
			t.Errorf("code %q: Retry-After %s is not whole seconds", s.Code, s.RetryAfter)
		}
		if got, ok := fnhook.CodeInfo(s.Code); !ok || got != s {
			t.Errorf("CodeInfo(%q) = %+v, %v; want %+v", s.Code, got, ok, s)
		}
	}
	if _, ok := fnhook.CodeInfo("no_such_code"); ok {
		t.Error("CodeInfo knows a code that is not registered")
	}
	// The codes callers retry on, with the policy the handler and gateway promise (SPEC 7).
	for _, code := range []string{fnhook.CodeNoCapacity, fnhook.CodeFunctionBuilding, fnhook.CodeUnavailable} {
		if s, _ := fnhook.CodeInfo(code); s.Status != 503 || s.RetryAfter != time.Second {
			t.Errorf("%s: %d, Retry-After %s; want 503 after 1s", code, s.Status, s.RetryAfter)
		}
	}
}

// TestCodeConstantsAreRegistered: every code constant declared in libs (the registry's, the
// old E names, and those of the handler and runner clients) names a registered code.
func TestCodeConstantsAreRegistered(t *testing.T) {
	n := 0
	for _, dir := range []string{".", "handlerapi", "runnerapi"} {
		for name, value := range codeConstants(t, dir) {
			n++
			if _, ok := fnhook.CodeInfo(value); !ok {
				t.Errorf("%s/%s = %q is not in the registry", dir, name, value)
			}
		}
	}
	if n < len(fnhook.Codes()) {
		t.Fatalf("found only %d code constants; the registry has %d codes", n, len(fnhook.Codes()))
	}
}

// codeConstants returns the string constants of dir's non-test files named Code... or
// E... (upper case only, the old names), resolving ones defined as another constant.
func codeConstants(t *testing.T, dir string) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]string{} // every string constant of the package
	var deferred [][2]string      // name, the constant it is defined as
	for _, path := range files {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if i >= len(vs.Values) {
						continue
					}
					switch v := vs.Values[i].(type) {
					case *ast.BasicLit:
						if v.Kind == token.STRING {
							values[name.Name], _ = strconv.Unquote(v.Value)
						}
					case *ast.Ident:
						deferred = append(deferred, [2]string{name.Name, v.Name})
					case *ast.SelectorExpr: // fnhook.CodeX in a package beside it
						if x, ok := v.X.(*ast.Ident); ok && x.Name == "fnhook" {
							deferred = append(deferred, [2]string{name.Name, "fnhook." + v.Sel.Name})
						}
					}
				}
			}
		}
	}
	root := map[string]string{}
	if dir != "." {
		for k, v := range codeConstants(t, ".") {
			root["fnhook."+k] = v
		}
	}
	for _, d := range deferred {
		if v, ok := values[d[1]]; ok {
			values[d[0]] = v
		} else if v, ok := root[d[1]]; ok {
			values[d[0]] = v
		}
	}
	isCode := regexp.MustCompile(`^(Code[A-Z]\w*|E[A-Z]+)$`)
	out := map[string]string{}
	for name, v := range values {
		if isCode.MatchString(name) {
			out[name] = v
		}
	}
	return out
}

// TestRunnerCodesAreRegistered: every code the runner (Node) answers is registered with the
// status the runner answers it with.
func TestRunnerCodesAreRegistered(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "services", "handler", "runner", "*.js"))
	if err != nil {
		t.Fatal(err)
	}
	answer := regexp.MustCompile(`(?:sendError\(res,|HttpError\()\s*(\d{3}),\s*'([a-z_]+)'`)
	n := 0
	for _, path := range files {
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range answer.FindAllStringSubmatch(string(src), -1) {
			n++
			status, _ := strconv.Atoi(m[1])
			s, ok := fnhook.CodeInfo(m[2])
			if !ok {
				t.Errorf("%s answers %d %s, which is not in the registry", filepath.Base(path), status, m[2])
			} else if s.Status != status {
				t.Errorf("%s answers %s with %d; the registry says %d", filepath.Base(path), m[2], status, s.Status)
			}
		}
	}
	if n < 10 {
		t.Fatalf("found only %d error answers in the runner's sources (%d files); the pattern is out of date", n, len(files))
	}
}

func TestErrorStatusAndRetryAfter(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		status int
		retry  time.Duration
		header string
	}{
		{"registered, no retry", fnhook.Errorf(fnhook.CodeNotFound, "x"), 404, 0, ""},
		{"no_capacity", &fnhook.Error{Code: fnhook.CodeNoCapacity}, 503, time.Second, "1"},
		{"function_building, wrapped", fmt.Errorf("resolve: %w", &fnhook.Error{Code: fnhook.CodeFunctionBuilding}), 503, time.Second, "1"},
		{"unavailable", fnhook.Errorf(fnhook.CodeUnavailable, "x"), 503, time.Second, "1"},
		{"relayed status and Retry-After win", &fnhook.Error{Code: fnhook.CodeNoCapacity, Status: 503, Retry: 7 * time.Second}, 503, 7 * time.Second, "7"},
		{"part of a second rounds up", &fnhook.Error{Code: fnhook.CodeUnavailable, Retry: 1500 * time.Millisecond}, 503, 1500 * time.Millisecond, "2"},
		{"unknown code", &fnhook.Error{Code: "no_such_code"}, 500, 0, ""},
		{"unknown code with a status", &fnhook.Error{Code: "http_409", Status: 409}, 409, 0, ""},
		{"any 503 asks to retry", &fnhook.Error{Code: "http_503", Status: 503}, 503, fnhook.DefaultRetryAfter, "1"},
		{"not an *Error", fmt.Errorf("boom"), 500, 0, ""},
		{"no error", nil, 500, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fnhook.StatusOf(tt.err); got != tt.status {
				t.Errorf("status %d, want %d", got, tt.status)
			}
			if got := fnhook.RetryAfterOf(tt.err); got != tt.retry {
				t.Errorf("RetryAfterOf %s, want %s", got, tt.retry)
			}
			h := http.Header{}
			fnhook.SetRetryAfter(h, tt.err)
			if got := h.Get("Retry-After"); got != tt.header {
				t.Errorf("Retry-After %q, want %q", got, tt.header)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	tests := map[string]time.Duration{
		"":                              0,
		"1":                             time.Second,
		" 30 ":                          30 * time.Second,
		"0":                             0,
		"-5":                            0,
		"Wed, 21 Oct 2015 07:28:00 GMT": 0,
		"99999999999":                   time.Hour,
	}
	for in, want := range tests {
		if got := fnhook.ParseRetryAfter(in); got != want {
			t.Errorf("ParseRetryAfter(%q) = %s, want %s", in, got, want)
		}
	}
}
