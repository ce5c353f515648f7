package bridge

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/fnhook/fnhook/libs/testinfra"
)

func TestJobOf(t *testing.T) {
	job := jobOf(Spec{JobID: "fnhook-bench-floor-x", Source: "src", Env: map[string]string{"A": "1"}, CPUMHz: 100, MemoryMB: 256})
	tg := job.TaskGroups[0]
	task := tg.Tasks[0]
	tests := []struct {
		what      string
		got, want any
	}{
		{"id", *job.ID, "fnhook-bench-floor-x"},
		{"network mode", tg.Networks[0].Mode, "bridge"},
		{"port label", tg.Networks[0].DynamicPorts[0].Label, "http"},
		{"port to", tg.Networks[0].DynamicPorts[0].To, 8080},
		{"restarts", *tg.RestartPolicy.Attempts, 0},
		{"driver", task.Driver, "exec"},
		{"user", task.User, "nobody"},
		{"command", task.Config["command"], "/usr/bin/node"},
		{"args", strings.Join(task.Config["args"].([]string), " "), "-e src"},
		{"env from spec", task.Env["A"], "1"},
		{"listens on every interface of its namespace", task.Env["FNHOOK_BENCH_HOST"], "0.0.0.0"},
		{"port in the namespace", task.Env["FNHOOK_BENCH_PORT"], "8080"},
		{"cpu", *task.Resources.CPU, 100},
		{"memory", *task.Resources.MemoryMB, 256},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %v, want %v", tt.what, tt.got, tt.want)
		}
	}
}

func TestStartRefusesInterpolation(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
	}{
		{"source", Spec{JobID: "x", Source: "const a = `${b}`"}},
		{"env", Spec{JobID: "x", Source: "ok", Env: map[string]string{"F": "${NOMAD_TOKEN}"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// An address nothing listens on: the check must come before any Nomad call.
			_, err := Start(context.Background(), "http://127.0.0.1:1", tt.spec)
			if err == nil || !strings.Contains(err.Error(), "interpolate") {
				t.Fatalf("err = %v, want a refusal", err)
			}
		})
	}
}

// TestStartAndStop runs a real bridge-mode exec job on the local Nomad, reaches it through
// its mapped port, and stops and purges it.
func TestStartAndStop(t *testing.T) {
	env := testinfra.Start(t)
	id := testinfra.Name("fnhook-bench-test")
	const src = `require("node:http").createServer((q, s) => s.end(process.env.GREETING)).listen(8080, process.env.FNHOOK_BENCH_HOST)`
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	job, err := Start(ctx, env.NomadAddr, Spec{JobID: id, Source: src, Env: map[string]string{"GREETING": "hi from the bridge"}, CPUMHz: 100, MemoryMB: 128})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			job.Stop(context.Background())
		}
	})
	if !strings.HasPrefix(job.URL, "http://127.0.0.1:") {
		t.Fatalf("URL %q is not a mapped loopback port", job.URL)
	}
	resp, err := http.Get(job.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hi from the bridge" {
		t.Fatalf("answer %q", body)
	}
	if err := job.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	stopped = true
	c, err := nomad.NewClient(&nomad.Config{Address: env.NomadAddr, SecretID: env.NomadToken})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Jobs().Info(id, nil); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("job still known to Nomad after Stop: err = %v", err)
	}
	if _, err := http.Get(job.URL); err == nil {
		t.Fatalf("%s still answers after Stop", job.URL)
	}
}
