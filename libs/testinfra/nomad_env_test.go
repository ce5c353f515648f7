package testinfra_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/fnhook/fnhook/libs/testinfra"
)

// TestNomadTasksGetNoHostEnvironment proves that what the shell which started the
// infrastructure exported (make test exports FNHOOK_ENV_CANARY; this machine sets AWS_*
// variables) reaches neither the Nomad agent nor a task it runs.
func TestNomadTasksGetNoHostEnvironment(t *testing.T) {
	env := testinfra.Start(t)

	// 1. The agent itself was started with a scrubbed environment.
	pid, err := exec.Command("pgrep", "-o", "-f", "nomad agent -config").Output()
	if err != nil {
		t.Fatalf("no nomad agent process found: %v", err)
	}
	raw, err := os.ReadFile("/proc/" + strings.TrimSpace(string(pid)) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range bytes.Split(raw, []byte{0}) {
		k, _, _ := strings.Cut(string(kv), "=")
		if k != "" && k != "PATH" && k != "HOME" {
			t.Errorf("the nomad agent's environment holds %s", k)
		}
	}

	// 2. A task run with the project's agent configuration sees none of it either.
	c, err := nomad.NewClient(&nomad.Config{Address: env.NomadAddr, SecretID: env.NomadToken})
	if err != nil {
		t.Fatal(err)
	}
	id := testinfra.Name("fnhook-envtest")
	job := &nomad.Job{
		ID: &id, Name: &id, Type: ptr("batch"), Datacenters: []string{"*"},
		TaskGroups: []*nomad.TaskGroup{{
			Name:             ptr("g"),
			RestartPolicy:    &nomad.RestartPolicy{Attempts: ptr(0), Mode: ptr("fail")},
			ReschedulePolicy: &nomad.ReschedulePolicy{Attempts: ptr(0), Unlimited: ptr(false)},
			Tasks: []*nomad.Task{{
				Name: "env", Driver: "exec", User: "nobody",
				Config:    map[string]any{"command": "/usr/bin/node", "args": []string{"-e", "console.log(JSON.stringify(process.env))"}},
				Resources: &nomad.Resources{CPU: ptr(100), MemoryMB: ptr(128)},
			}},
		}},
	}
	if _, _, err := c.Jobs().Register(job, nil); err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
	t.Cleanup(func() { _, _, _ = c.Jobs().Deregister(id, true, nil) })

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var alloc *nomad.Allocation
	for alloc == nil {
		if ctx.Err() != nil {
			t.Fatal("the env job did not complete in time")
		}
		stubs, _, err := c.Jobs().Allocations(id, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range stubs {
			if s.ClientStatus == "complete" || s.ClientStatus == "failed" {
				alloc, _, err = c.Allocations().Info(s.ID, nil)
				if err != nil {
					t.Fatal(err)
				}
			}
		}
		time.Sleep(300 * time.Millisecond)
	}
	if alloc.ClientStatus != "complete" {
		t.Fatalf("env task ended %s: %+v", alloc.ClientStatus, alloc.TaskStates)
	}
	rc, err := c.AllocFS().Cat(alloc, "alloc/logs/env.stdout.0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var taskEnv map[string]string
	if err := json.NewDecoder(rc).Decode(&taskEnv); err != nil {
		t.Fatalf("task output is not the env JSON: %v", err)
	}
	if len(taskEnv) == 0 {
		t.Fatal("the task printed an empty environment: the check would prove nothing")
	}
	for k := range taskEnv {
		if strings.HasPrefix(k, "FNHOOK_") || strings.HasPrefix(k, "AWS_") || k == "SSL_CERT_FILE" || k == "NODE_EXTRA_CA_CERTS" {
			t.Errorf("the task's environment holds the host's %s", k)
		}
	}
	if canary := os.Getenv("FNHOOK_ENV_CANARY"); canary != "" {
		for k, v := range taskEnv {
			if strings.Contains(v, canary) {
				t.Errorf("the canary exported before the agent started reached the task in %s", k)
			}
		}
	}
}

func ptr[T any](v T) *T { return &v }
