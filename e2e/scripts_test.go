package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// sampleWorld is what scripts/sample.sh talks to, faked: the gateway, Nomad's allocations,
// Consul's list of handlers and one handler's /healthz.
type sampleWorld struct {
	adminKey  string
	runStatus int
	runBody   string
	allocs    any
	health    string
}

// runSample runs scripts/sample.sh against w and returns its output, its exit error and the
// command lines it gave curl (recorded by a shim in front of the real curl).
func runSample(t *testing.T, w sampleWorld) (string, error, string) {
	t.Helper()
	gateway := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/run/") {
			rw.Header().Set("Content-Type", "application/json")
			rw.WriteHeader(w.runStatus)
			_, _ = rw.Write([]byte(w.runBody))
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+w.adminKey {
			http.Error(rw, `{"error":{"code":"unauthorized","message":"bad key"}}`, http.StatusUnauthorized)
			return
		}
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/v1/tenants/demo":
			_, _ = rw.Write([]byte(`{"name":"demo"}`))
		case r.Method == http.MethodGet && r.URL.Path == "/v1/tenants/demo/functions/hello":
			_, _ = rw.Write([]byte(`{"name":"hello","version":1,"status":"ready"}`))
		case r.Method == http.MethodPost && r.URL.Path == "/v1/tenants/demo/tokens":
			rw.WriteHeader(http.StatusCreated)
			_, _ = rw.Write([]byte(`{"id":"t1","token":"fnh.demo.t1.secret"}`))
		default:
			http.Error(rw, `{"error":{"code":"not_found","message":"no"}}`, http.StatusNotFound)
		}
	}))
	defer gateway.Close()
	nomad := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/allocations" {
			http.NotFound(rw, r)
			return
		}
		_ = json.NewEncoder(rw).Encode(w.allocs)
	}))
	defer nomad.Close()
	handler := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		_, _ = rw.Write([]byte(w.health))
	}))
	defer handler.Close()
	haddr := strings.TrimPrefix(handler.URL, "http://")
	host, port, _ := strings.Cut(haddr, ":")
	consul := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/health/service/fnhook-handler" {
			http.NotFound(rw, r)
			return
		}
		_, _ = rw.Write([]byte(`[{"Service":{"Address":"` + host + `","Port":` + port + `}}]`))
	}))
	defer consul.Close()

	state := t.TempDir()
	secrets := "FNHOOK_ADMIN_KEY=" + w.adminKey + "\nFNHOOK_HANDLER_SECRET=x\n"
	if err := os.WriteFile(filepath.Join(state, "secrets.env"), []byte(secrets), 0o600); err != nil {
		t.Fatal(err)
	}
	realCurl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal(err)
	}
	shims, argv := t.TempDir(), filepath.Join(state, "curl-argv")
	shim := "#!/bin/sh\nprintf '%s\\n' \"$*\" >>" + argv + "\nexec " + realCurl + " \"$@\"\n"
	if err := os.WriteFile(filepath.Join(shims, "curl"), []byte(shim), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", filepath.Join("..", "scripts", "sample.sh"))
	cmd.Env = []string{
		"PATH=" + shims + ":" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"FNHOOK_STATE=" + state,
		"FNHOOK_GATEWAY_URL=" + gateway.URL,
		"NOMAD_ADDR=" + nomad.URL,
		"CONSUL_HTTP_ADDR=" + strings.TrimPrefix(consul.URL, "http://"),
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	runErr := cmd.Run()
	calls, err := os.ReadFile(argv)
	if err != nil {
		t.Fatalf("the curl shim recorded nothing: %v\n%s", err, out.String())
	}
	return out.String(), runErr, string(calls)
}

func failedAlloc(id, job string, modify int64, events ...map[string]any) map[string]any {
	return map[string]any{
		"ID": id, "JobID": job, "ClientStatus": "failed", "ModifyTime": modify,
		"TaskStates": map[string]any{"runner": map[string]any{"Events": events}},
	}
}

// TestScriptSampleFailureNamesCause: when the sample call does not answer 200, `make up`'s
// last step exits non-zero and says why in Nomad's and the handler's own words.
func TestScriptSampleFailureNamesCause(t *testing.T) {
	denied := `failed to launch command with executor: rpc error: code = Unknown desc = exec: "/usr/bin/node": stat /usr/bin/node: permission denied`
	out, err, _ := runSample(t, sampleWorld{
		adminKey:  "admin-key-0123456789abcdef",
		runStatus: http.StatusServiceUnavailable,
		runBody:   `{"error":{"code":"no_capacity","message":"no runner is available on this node right now; retry shortly"}}`,
		allocs: []any{
			failedAlloc("0ldalloc-0000", "fnhook-runner-aaaa-1", 100,
				map[string]any{"Type": "Driver Failure", "FailsTask": true, "DisplayMessage": "an older failure"}),
			failedAlloc("newalloc-1111", "fnhook-runner-aaaa-2", 200,
				map[string]any{"Type": "Received", "DisplayMessage": "Task received by client"},
				map[string]any{"Type": "Driver Failure", "FailsTask": true, "DisplayMessage": denied}),
			failedAlloc("otheralloc-22", "someone-elses-job", 300,
				map[string]any{"Type": "Driver Failure", "FailsTask": true, "DisplayMessage": "not ours"}),
		},
		health: `{"status":"degraded","reason":"no runner could start: ` + strings.ReplaceAll(denied, `"`, `\"`) + `"}`,
	})
	if err == nil {
		t.Fatalf("sample.sh exited 0 after a 503:\n%s", out)
	}
	for _, want := range []string{"503", "no_capacity", "fnhook-runner-aaaa-2", "stat /usr/bin/node: permission denied", "degraded", "did not answer 200"} {
		if !strings.Contains(out, want) {
			t.Errorf("output does not name %q:\n%s", want, out)
		}
	}
	for _, bad := range []string{"fnhook is up", "an older failure", "not ours"} {
		if strings.Contains(out, bad) {
			t.Errorf("output says %q:\n%s", bad, out)
		}
	}
}

// TestScriptSampleSuccess: a 200 ends in "fnhook is up"; the admin key reached the gateway
// (which refuses anything else) but never curl's command line, which every local user can
// read in /proc.
func TestScriptSampleSuccess(t *testing.T) {
	const key = "admin-key-0123456789abcdef"
	out, err, calls := runSample(t, sampleWorld{
		adminKey:  key,
		runStatus: http.StatusOK,
		runBody:   `{"hello":"fnhook"}`,
		allocs:    []any{},
		health:    `{"status":"ok"}`,
	})
	if err != nil {
		t.Fatalf("sample.sh failed: %v\n%s", err, out)
	}
	for _, want := range []string{"HTTP/1.1 200", `{"hello":"fnhook"}`, "fnhook is up"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(calls, "/v1/tenants/demo") {
		t.Fatalf("curl was not called for the API (shim log):\n%s", calls)
	}
	if strings.Contains(calls, key) {
		t.Errorf("the admin key was on curl's command line:\n%s", calls)
	}
}
