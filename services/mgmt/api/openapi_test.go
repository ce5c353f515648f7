package api

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/fnhook/fnhook/libs/server"
	"github.com/fnhook/fnhook/libs/testinfra"
)

var httpMethods = []string{"get", "put", "post", "delete", "patch", "head", "options", "trace"}

// TestOpenAPIMatchesRoutes keeps docs/openapi.yaml and the registered routes identical:
// every route echo serves is documented, and nothing else is.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	t.Parallel()
	root, err := testinfra.Root()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, "docs", "openapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
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
