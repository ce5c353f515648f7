package e2e

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/fnhook/fnhook/libs/testinfra"
)

// TestJobSpecsHoldNoSecrets: the deployed services get their secrets from Nomad Variables
// through templates, so reading any fnhook job spec (what `nomad job inspect` shows, and
// what anyone with read-job sees) reveals none of the platform's secrets.
func TestJobSpecsHoldNoSecrets(t *testing.T) {
	env := testinfra.Start(t)
	waitGateway(t)
	f, err := os.Open(env.SecretsFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	secrets := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if ok && len(v) >= 16 {
			secrets[k] = v
		}
	}
	if len(secrets) < 8 {
		t.Fatalf("only %d secrets in %s", len(secrets), env.SecretsFile)
	}
	get := func(path string) string {
		req, _ := http.NewRequest("GET", env.NomadAddr+path, nil)
		req.Header.Set("X-Nomad-Token", env.NomadToken)
		resp, err := httpc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %.200s", path, resp.StatusCode, b)
		}
		return string(b)
	}
	specs := map[string]string{}
	for _, svc := range []string{"gateway", "mgmt", "handler", "builder"} {
		specs["fnhook-"+svc] = get("/v1/job/fnhook-" + svc + "?namespace=fnhook")
	}
	// The handler's runner jobs too: they carry their own runner token, never a platform secret.
	for _, id := range jsonIDs(get("/v1/jobs?namespace=fnhook-runners&prefix=fnhook-runner")) {
		specs[id] = get("/v1/job/" + id + "?namespace=fnhook-runners")
	}
	if len(specs) < 5 {
		t.Errorf("no runner job found to check (%d specs)", len(specs))
	}
	for id, spec := range specs {
		for name, v := range secrets {
			if strings.Contains(spec, v) {
				t.Errorf("the job spec of %s holds %s", id, name)
			}
		}
	}
	// And the services did get them: the variable exists and the template reads it.
	if !strings.Contains(specs["fnhook-mgmt"], `nomadVar \"nomad/jobs/fnhook-mgmt\"`) {
		t.Errorf("fnhook-mgmt's spec does not read its secrets from its Nomad Variable")
	}
}

// jsonIDs picks the job ids out of a Nomad job list.
func jsonIDs(list string) []string {
	var stubs []struct{ ID string }
	_ = json.Unmarshal([]byte(list), &stubs)
	var ids []string
	for _, s := range stubs {
		ids = append(ids, s.ID)
	}
	return ids
}
