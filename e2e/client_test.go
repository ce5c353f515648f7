package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/fnhook/fnhook/libs/testinfra"
)

// gatewayURL is where the deployed gateway listens (scripts/deploy.sh).
func gatewayURL() string {
	if u := os.Getenv("FNHOOK_GATEWAY_URL"); u != "" {
		return u
	}
	return "http://127.0.0.1:8080"
}

var httpc = &http.Client{Timeout: 60 * time.Second}

// api is a small client of the management API through the gateway.
type api struct {
	t     *testing.T
	token string
}

func admin(t *testing.T) *api {
	env := testinfra.Start(t)
	if env.AdminKey == "" {
		t.Fatal("no admin key in the secrets file: was the suite deployed with scripts/deploy.sh?")
	}
	waitGateway(t)
	return &api{t: t, token: env.AdminKey}
}

// waitGateway waits until the gateway answers and reaches mgmt (after a restart too).
func waitGateway(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := httpc.Get(gatewayURL() + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway at %s is not healthy: %v", gatewayURL(), err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func (a *api) do(method, path string, body any) (int, map[string]any) {
	a.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, gatewayURL()+path, r)
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpc.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

// must calls and fails the test unless the status is want.
func (a *api) must(want int, method, path string, body any) map[string]any {
	a.t.Helper()
	status, out := a.do(method, path, body)
	if status != want {
		a.t.Fatalf("%s %s: status %d, want %d: %v", method, path, status, want, out)
	}
	return out
}

// waitReady polls the function until it is ready (fails on failed or timeout).
func (a *api) waitReady(tenant, fn string, within time.Duration) map[string]any {
	a.t.Helper()
	deadline := time.Now().Add(within)
	for {
		out := a.must(200, "GET", "/v1/tenants/"+tenant+"/functions/"+fn, nil)
		switch out["status"] {
		case "ready":
			return out
		case "failed":
			a.t.Fatalf("function %s/%s failed to build: %v", tenant, fn, out["error"])
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("function %s/%s not ready after %s: %v", tenant, fn, within, out)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// newTenant creates a tenant with a unique name and deletes it when the test ends.
func (a *api) newTenant(prefix string) string {
	name := testinfra.Name(prefix)
	a.must(201, "PUT", "/v1/tenants/"+name, map[string]any{})
	a.t.Cleanup(func() { a.do("DELETE", "/v1/tenants/"+name, nil) })
	return name
}

// call invokes a function through the gateway.
func call(t *testing.T, method, path string, body []byte, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, gatewayURL()+path, bytes.NewReader(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := httpc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp, raw
}

// eventually retries f until it returns nil or d passes.
func eventually(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %v", d, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func jsonBody(raw []byte) map[string]any {
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return m
}

func expect(field string, got, want any) error {
	if fmt.Sprint(got) != fmt.Sprint(want) {
		return fmt.Errorf("%s = %v, want %v", field, got, want)
	}
	return nil
}

var _ = strings.Contains
