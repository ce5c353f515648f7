package api

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	fnhook "github.com/fnhook/fnhook/libs"
	"github.com/fnhook/fnhook/libs/server"
	"github.com/fnhook/fnhook/libs/testinfra"
)

var httpMethods = []string{"get", "put", "post", "delete", "patch", "head", "options", "trace"}

// readOpenAPI returns the text of docs/openapi.yaml.
func readOpenAPI(t *testing.T) []byte {
	t.Helper()
	root, err := testinfra.Root()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, "docs", "openapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestOpenAPIMatchesRoutes keeps docs/openapi.yaml and the registered routes identical:
// every route echo serves is documented, and nothing else is.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	t.Parallel()
	raw := readOpenAPI(t)
	var doc struct {
		OpenAPI string                    `yaml:"openapi"`
		Paths   map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("docs/openapi.yaml does not parse: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi version %q, want 3.x", doc.OpenAPI)
	}
	var documented []string
	for path, ops := range doc.Paths {
		for m, op := range ops {
			if !slices.Contains(httpMethods, m) {
				continue
			}
			if o, _ := op.(map[string]any); o["responses"] == nil {
				t.Errorf("%s %s documents no responses", strings.ToUpper(m), path)
			}
			documented = append(documented, strings.ToUpper(m)+" "+path)
		}
	}

	srv := server.New("mgmt", slog.New(slog.NewTextHandler(io.Discard, nil)))
	New(Config{AdminKey: "0123456789abcdef0123"}).Register(srv.Echo)
	param := regexp.MustCompile(`:([A-Za-z_]+)`)
	var served []string
	for _, r := range srv.Echo.Routes() {
		if !slices.Contains(httpMethods, strings.ToLower(r.Method)) {
			continue // echo's internal not-found routes of groups
		}
		served = append(served, r.Method+" "+param.ReplaceAllString(r.Path, "{$1}"))
	}
	slices.Sort(documented)
	slices.Sort(served)
	served = slices.Compact(served)
	if !slices.Equal(documented, served) {
		t.Errorf("docs/openapi.yaml and the routes differ\ndocumented: %v\nserved:     %v", documented, served)
	}

	// Every $ref must point at something the document defines.
	var all map[string]any
	if err := yaml.Unmarshal(raw, &all); err != nil {
		t.Fatal(err)
	}
	for _, ref := range regexp.MustCompile(`\$ref: "#/([^"]+)"`).FindAllStringSubmatch(string(raw), -1) {
		var node any = all
		for _, part := range strings.Split(ref[1], "/") {
			m, ok := node.(map[string]any)
			if !ok {
				node = nil
				break
			}
			node = m[part]
		}
		if node == nil {
			t.Errorf("$ref #/%s resolves to nothing", ref[1])
		}
	}
}

// TestOpenAPIErrorCodes keeps the error answers of docs/openapi.yaml and the code registry
// in step: every error response names its codes (x-error-codes), each registered with the
// status it is documented under, and documents Retry-After when a code asks to retry.
func TestOpenAPIErrorCodes(t *testing.T) {
	t.Parallel()
	raw := readOpenAPI(t)
	type response struct {
		Ref     string         `yaml:"$ref"`
		Codes   []string       `yaml:"x-error-codes"`
		Headers map[string]any `yaml:"headers"`
		Content map[string]any `yaml:"content"`
	}
	var doc struct {
		Paths      map[string]map[string]any `yaml:"paths"`
		Components struct {
			Responses map[string]response `yaml:"responses"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("docs/openapi.yaml does not parse: %v", err)
	}
	checked := 0
	for path, ops := range doc.Paths {
		for m, op := range ops {
			if !slices.Contains(httpMethods, m) {
				continue
			}
			b, _ := yaml.Marshal(op)
			var o struct {
				Responses map[string]response `yaml:"responses"`
			}
			if err := yaml.Unmarshal(b, &o); err != nil {
				t.Fatal(err)
			}
			for key, r := range o.Responses {
				status, err := strconv.Atoi(key)
				if err != nil || status < 400 {
					continue
				}
				where := fmt.Sprintf("%s %s %d", strings.ToUpper(m), path, status)
				if name, ok := strings.CutPrefix(r.Ref, "#/components/responses/"); ok {
					r, where = doc.Components.Responses[name], where+" ("+name+")"
				}
				if c, _ := yaml.Marshal(r.Content); !strings.Contains(string(c), "#/components/schemas/Error") {
					continue // not the error envelope (/healthz answers its own body)
				}
				if len(r.Codes) == 0 {
					t.Errorf("%s names no x-error-codes", where)
				}
				for _, code := range r.Codes {
					checked++
					spec, ok := fnhook.CodeInfo(code)
					switch {
					case !ok:
						t.Errorf("%s: code %q is not in the registry", where, code)
					case spec.Status != status:
						t.Errorf("%s: code %s answers %d", where, code, spec.Status)
					case spec.RetryAfter > 0 && r.Headers["Retry-After"] == nil:
						t.Errorf("%s: code %s carries Retry-After, which the response does not document", where, code)
					}
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no error response checked")
	}
}
