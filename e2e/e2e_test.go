package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

const helloV1 = `
const dayjs = require('dayjs');
module.exports = async (ctx) => ({
  body: { v: 1, tenant: ctx.tenant, path: ctx.path, q: ctx.query.q, year: dayjs('2024-05-06').year() },
});`

const helloV2 = `
const dayjs = require('dayjs');
module.exports = async (ctx) => ({ status: 201, headers: { 'x-v': '2' }, body: { v: 2, day: dayjs('2024-05-06').date() } });`

// TestLifecycle: tenant -> token -> function with a dependency -> ready -> call through
// the gateway -> update -> the next call sees it within 1 s -> delete -> 404.
func TestLifecycle(t *testing.T) {
	a := admin(t)
	tenant := a.newTenant("e2e")
	tok := a.must(201, "POST", "/v1/tenants/"+tenant+"/tokens", map[string]any{})
	ten := &api{t: t, token: tok["token"].(string)}

	fnPath := "/v1/tenants/" + tenant + "/functions/hello"
	created := ten.must(201, "PUT", fnPath, map[string]any{"code": helloV1, "dependencies": map[string]string{"dayjs": "^1.11.0"}})
	if deps, _ := created["resolvedDependencies"].(map[string]any); deps == nil || !strings.HasPrefix(fmt.Sprint(deps["dayjs"]), "1.11.") {
		t.Fatalf("resolvedDependencies = %v, want dayjs 1.11.x", created["resolvedDependencies"])
	}
	ten.waitReady(tenant, "hello", 4*time.Minute)

	resp, body := call(t, "POST", "/run/"+tenant+"/hello/orders/7?q=x", []byte(`{"a":1}`), map[string]string{"Content-Type": "application/json"})
	got := jsonBody(body)
	if resp.StatusCode != 200 || got["v"] != 1.0 || got["tenant"] != tenant || got["path"] != "/orders/7" || got["q"] != "x" || got["year"] != 2024.0 {
		t.Fatalf("first call: %d %s", resp.StatusCode, body)
	}

	ten.must(200, "PUT", fnPath, map[string]any{"code": helloV2, "dependencies": map[string]string{"dayjs": "^1.11.0"}})
	updated := time.Now()
	eventually(t, time.Second, func() error {
		resp, body := call(t, "GET", "/run/"+tenant+"/hello", nil, nil)
		if resp.StatusCode != 201 || resp.Header.Get("x-v") != "2" || jsonBody(body)["day"] != 6.0 {
			return fmt.Errorf("still the old version: %d %s", resp.StatusCode, body)
		}
		return nil
	})
	t.Logf("update visible after %s", time.Since(updated))

	ten.must(204, "DELETE", fnPath, nil)
	eventually(t, time.Second, func() error {
		resp, body := call(t, "GET", "/run/"+tenant+"/hello", nil, nil)
		if resp.StatusCode != 404 {
			return fmt.Errorf("deleted function answered %d %s", resp.StatusCode, body)
		}
		return nil
	})
}

const whoami = `
module.exports = async (ctx) => ({ body: { tenant: ctx.tenant, secret: ctx.configuration.SECRET, n: ctx.query.n } });`

// TestTwoTenantsNoCrossTalk: two tenants call concurrently; each sees only its own code
// and configuration.
func TestTwoTenantsNoCrossTalk(t *testing.T) {
	a := admin(t)
	tenants := []string{a.newTenant("e2e-a"), a.newTenant("e2e-b")}
	for _, tn := range tenants {
		a.must(201, "PUT", "/v1/tenants/"+tn+"/functions/who", map[string]any{
			"code": whoami, "configuration": map[string]string{"SECRET": "s-" + tn},
		})
		a.waitReady(tn, "who", time.Minute)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := 0; i < 40; i++ {
		for _, tn := range tenants {
			wg.Add(1)
			go func(tn string, i int) {
				defer wg.Done()
				resp, body := call(t, "GET", fmt.Sprintf("/run/%s/who?n=%d", tn, i), nil, nil)
				m := jsonBody(body)
				if resp.StatusCode != 200 || m["tenant"] != tn || m["secret"] != "s-"+tn || m["n"] != fmt.Sprint(i) {
					errs <- fmt.Errorf("call %d of %s got %d %s", i, tn, resp.StatusCode, body)
				}
			}(tn, i)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestErrorsASaaSCanActOn: unknown tenant or function 404, a thrown error 500 with a safe
// message, a timeout 504.
func TestErrorsASaaSCanActOn(t *testing.T) {
	a := admin(t)
	tn := a.newTenant("e2e-err")
	a.must(201, "PUT", "/v1/tenants/"+tn+"/functions/boom", map[string]any{
		"code": "module.exports = async () => { throw new Error('secret internals at /etc/x') }",
	})
	a.must(201, "PUT", "/v1/tenants/"+tn+"/functions/slow", map[string]any{
		"code": "module.exports = () => new Promise(() => {})", "timeoutMs": 300,
	})
	a.waitReady(tn, "boom", time.Minute)
	a.waitReady(tn, "slow", time.Minute)
	cases := []struct {
		path   string
		status int
	}{
		{"/run/no-such-tenant-x/fn", 404},
		{"/run/" + tn + "/nope", 404},
		{"/run/" + tn + "/boom", 500},
		{"/run/" + tn + "/slow", 504},
		{"/run/Bad_Name/x", 404},
	}
	for _, c := range cases {
		resp, body := call(t, "GET", c.path, nil, nil)
		if resp.StatusCode != c.status {
			t.Errorf("%s: %d %s, want %d", c.path, resp.StatusCode, body, c.status)
		}
		if strings.Contains(string(body), "/etc/x") || strings.Contains(string(body), "    at ") {
			t.Errorf("%s leaked internals: %s", c.path, body)
		}
		if m := jsonBody(body); m["error"] == nil {
			t.Errorf("%s: no JSON error envelope: %s", c.path, body)
		}
	}
}

// TestServicesRecoverFromKill: killing the gateway, mgmt or handler process (Nomad restarts
// it) loses no function, and calls resume on their own.
func TestServicesRecoverFromKill(t *testing.T) {
	a := admin(t)
	tn := a.newTenant("e2e-kill")
	a.must(201, "PUT", "/v1/tenants/"+tn+"/functions/alive", map[string]any{"code": "module.exports = async () => ({ body: 'alive' })"})
	a.waitReady(tn, "alive", time.Minute)
	for _, svc := range []string{"handler", "gateway", "mgmt"} {
		out, err := exec.Command("pkill", "-KILL", "-f", "bin/"+svc+"$").CombinedOutput()
		if err != nil {
			t.Fatalf("kill %s: %v %s", svc, err, out)
		}
		eventually(t, 60*time.Second, func() error {
			resp, err := httpc.Get(gatewayURL() + "/run/" + tn + "/alive")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				return fmt.Errorf("after killing %s the call answers %d", svc, resp.StatusCode)
			}
			return nil
		})
		eventually(t, 60*time.Second, func() error {
			status, out := a.do("GET", "/v1/tenants/"+tn+"/functions/alive", nil)
			if status != 200 || out["status"] != "ready" {
				return fmt.Errorf("after killing %s the function reads %d %v", svc, status, out)
			}
			return nil
		})
	}
}
