package testinfra_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fnhook/fnhook/libs/testinfra"
)

// call makes one HTTP request with an optional token header and returns status and body.
func call(t *testing.T, method, url, header, token string, body any) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set(header, token)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b)
}

// rawExecJob is a job that would run a command as root on the host.
func rawExecJob(id, namespace string) map[string]any {
	return map[string]any{"Job": map[string]any{
		"ID": id, "Name": id, "Namespace": namespace, "Type": "batch", "Datacenters": []string{"*"},
		"TaskGroups": []any{map[string]any{
			"Name": "g",
			"Tasks": []any{map[string]any{
				"Name": "t", "Driver": "raw_exec",
				"Config": map[string]any{"command": "/bin/true"},
			}},
		}},
	}}
}

// TestNomadRefusesWithoutToken: with ACLs on, an anonymous caller (any local user, an
// install script) can neither read job specs nor register a job.
func TestNomadRefusesWithoutToken(t *testing.T) {
	env := testinfra.Start(t)
	if env.NomadToken == "" {
		t.Fatal("no NOMAD_TOKEN in the state directory's secrets: ACLs are off")
	}
	for _, path := range []string{"/v1/jobs", "/v1/jobs?namespace=fnhook", "/v1/job/fnhook-mgmt?namespace=fnhook",
		"/v1/var/nomad/jobs/fnhook-mgmt?namespace=fnhook", "/v1/acl/tokens", "/v1/nodes"} {
		if code, body := call(t, "GET", env.NomadAddr+path, "", "", nil); code != http.StatusForbidden {
			t.Errorf("anonymous GET %s answered %d, want 403: %.200s", path, code, body)
		}
	}
	id := testinfra.Name("fnhook-acltest")
	if code, body := call(t, "PUT", env.NomadAddr+"/v1/jobs", "", "", rawExecJob(id, "default")); code != http.StatusForbidden {
		t.Errorf("anonymous job registration answered %d, want 403: %.200s", code, body)
	}
	// The operator's token works (so the refusals above are ACLs, not a broken server).
	if code, body := call(t, "GET", env.NomadAddr+"/v1/jobs", "X-Nomad-Token", env.NomadToken, nil); code != http.StatusOK {
		t.Fatalf("GET /v1/jobs with the management token answered %d: %.200s", code, body)
	}
}

// TestHandlerNomadTokenReachesRunnerJobsOnly: a token with the handler's policy may list
// and read runner jobs, and nothing else: not the services' jobs or Variables, not the
// default namespace, and not raw_exec even among runner jobs.
func TestHandlerNomadTokenReachesRunnerJobsOnly(t *testing.T) {
	env := testinfra.Start(t)
	code, body := call(t, "POST", env.NomadAddr+"/v1/acl/token", "X-Nomad-Token", env.NomadToken,
		map[string]any{"Name": testinfra.Name("fnhook-acltest"), "Type": "client", "Policies": []string{"fnhook-handler"}})
	if code != http.StatusOK {
		t.Fatalf("create a handler token: %d %.200s", code, body)
	}
	var tok struct{ AccessorID, SecretID string }
	if err := json.Unmarshal([]byte(body), &tok); err != nil || tok.SecretID == "" {
		t.Fatalf("token answer: %v %.200s", err, body)
	}
	t.Cleanup(func() {
		call(t, "DELETE", env.NomadAddr+"/v1/acl/token/"+tok.AccessorID, "X-Nomad-Token", env.NomadToken, nil)
	})
	h := tok.SecretID
	if code, body := call(t, "GET", env.NomadAddr+"/v1/jobs?namespace=fnhook-runners", "X-Nomad-Token", h, nil); code != http.StatusOK {
		t.Errorf("handler token listing runner jobs answered %d: %.200s", code, body)
	}
	for _, path := range []string{"/v1/jobs?namespace=fnhook", "/v1/job/fnhook-mgmt?namespace=fnhook",
		"/v1/var/nomad/jobs/fnhook-mgmt?namespace=fnhook", "/v1/acl/tokens"} {
		if code, body := call(t, "GET", env.NomadAddr+path, "X-Nomad-Token", h, nil); code != http.StatusForbidden {
			t.Errorf("handler token GET %s answered %d, want 403: %.200s", path, code, body)
		}
	}
	if code, body := call(t, "PUT", env.NomadAddr+"/v1/jobs?namespace=fnhook", "X-Nomad-Token", h,
		rawExecJob(testinfra.Name("fnhook-acltest"), "fnhook")); code != http.StatusForbidden {
		t.Errorf("handler token registering a job among the services answered %d, want 403: %.200s", code, body)
	}
	code, body = call(t, "PUT", env.NomadAddr+"/v1/jobs?namespace=fnhook-runners", "X-Nomad-Token", h,
		rawExecJob(testinfra.Name("fnhook-acltest"), "fnhook-runners"))
	if code == http.StatusOK || !strings.Contains(body, "raw_exec") {
		t.Errorf("a raw_exec job among the runners was not refused: %d %.300s", code, body)
	}
}

// TestConsulRefusesWithoutToken: anonymous callers see an empty catalog and cannot
// register or write; a service's token registers only its own service.
func TestConsulRefusesWithoutToken(t *testing.T) {
	env := testinfra.Start(t)
	if env.ConsulToken == "" {
		t.Fatal("no CONSUL_HTTP_TOKEN in the state directory's secrets: ACLs are off")
	}
	base := "http://" + env.ConsulAddr
	reg := func(name string) map[string]any {
		return map[string]any{"Name": name, "ID": testinfra.Name("fnhook-acltest"), "Address": "127.0.0.1", "Port": 1}
	}
	if code, body := call(t, "PUT", base+"/v1/agent/service/register", "", "", reg("fnhook-gateway")); code != http.StatusForbidden {
		t.Errorf("anonymous registration answered %d, want 403: %.200s", code, body)
	}
	if code, body := call(t, "PUT", base+"/v1/kv/fnhook-acltest", "", "", "x"); code != http.StatusForbidden {
		t.Errorf("anonymous KV write answered %d, want 403: %.200s", code, body)
	}
	if code, body := call(t, "GET", base+"/v1/catalog/services", "", "", nil); code != http.StatusOK || strings.TrimSpace(body) != "{}" {
		t.Errorf("anonymous catalog read answered %d %.200s, want 200 and nothing", code, body)
	}
	if code, body := call(t, "GET", base+"/v1/catalog/services", "X-Consul-Token", env.ConsulToken, nil); code != http.StatusOK || !strings.Contains(body, "consul") {
		t.Fatalf("catalog with the management token: %d %.200s", code, body)
	}
	gw := secretsValue(t, env.SecretsFile, "CONSUL_TOKEN_GATEWAY")
	if code, body := call(t, "PUT", base+"/v1/agent/service/register", "X-Consul-Token", gw, reg("fnhook-mgmt")); code != http.StatusForbidden {
		t.Errorf("the gateway's token registering fnhook-mgmt answered %d, want 403: %.200s", code, body)
	}
	if code, body := call(t, "PUT", base+"/v1/kv/fnhook-acltest", "X-Consul-Token", gw, "x"); code != http.StatusForbidden {
		t.Errorf("the gateway's token writing KV answered %d, want 403: %.200s", code, body)
	}
}

// secretsValue reads one KEY=value line of the state directory's secrets file.
func secretsValue(t *testing.T, file, key string) string {
	t.Helper()
	v := testinfra.ReadSecret(file, key)
	if v == "" {
		t.Fatalf("%s has no %s", file, key)
	}
	return v
}
