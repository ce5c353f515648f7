// Package bridge runs the bench's floor server inside a bridge-mode Nomad exec job, like a
// runner (same driver, user, network mode and resources), and reaches it through its
// mapped loopback port: the floor for anything that goes through Nomad's network.
package bridge

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

// portLabel is the job's one port.
const portLabel = "http"

// Spec is what the job runs.
type Spec struct {
	JobID string
	// Source is node code run as `node -e Source`: Nomad interpolates dollar-brace
	// sequences in task arguments, so Source must hold none.
	Source   string
	Env      map[string]string
	CPUMHz   int
	MemoryMB int
}

// Job is a running floor job.
type Job struct {
	c  *nomad.Client
	id string
	// URL is the floor server through the mapped port, e.g. http://127.0.0.1:23456/.
	URL string
}

// Start registers the job and waits (within ctx) until its server answers on the mapped
// port. On failure the job is stopped again.
func Start(ctx context.Context, nomadAddr string, s Spec) (*Job, error) {
	if strings.Contains(s.Source, "${") {
		return nil, fmt.Errorf("bridge job %s: the inline source holds a ${ sequence that Nomad would interpolate", s.JobID)
	}
	for k, v := range s.Env {
		if strings.Contains(v, "${") {
			return nil, fmt.Errorf("bridge job %s: env %s holds a ${ sequence that Nomad would interpolate", s.JobID, k)
		}
	}
	cfg := nomad.DefaultConfig()
	cfg.Address = nomadAddr
	c, err := nomad.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("nomad client for %s: %w", nomadAddr, err)
	}
	if _, _, err := c.Jobs().Register(jobOf(s), (&nomad.WriteOptions{}).WithContext(ctx)); err != nil {
		return nil, fmt.Errorf("register bridge job %s: %w", s.JobID, err)
	}
	j := &Job{c: c, id: s.JobID}
	addr, err := j.waitAddress(ctx)
	if err == nil {
		j.URL = "http://" + addr + "/"
		err = waitHTTP(ctx, j.URL)
	}
	if err != nil {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if serr := j.Stop(stopCtx); serr != nil {
			err = fmt.Errorf("%w (and stopping it: %v)", err, serr)
		}
		return nil, fmt.Errorf("bridge job %s: %w", s.JobID, err)
	}
	return j, nil
}

func jobOf(s Spec) *nomad.Job {
	job := nomad.NewServiceJob(s.JobID, s.JobID, "global", 50)
	job.Datacenters = []string{"*"}
	job.Meta = map[string]string{"fnhook_role": "bench"}
	tg := nomad.NewTaskGroup("floor", 1)
	tg.RestartPolicy = &nomad.RestartPolicy{Attempts: new(0), Mode: new("fail")}
	tg.ReschedulePolicy = &nomad.ReschedulePolicy{Attempts: new(0), Unlimited: new(false)}
	tg.Networks = []*nomad.NetworkResource{{
		Mode:         "bridge",
		DynamicPorts: []nomad.Port{{Label: portLabel, To: 8080}},
	}}
	task := nomad.NewTask("floor", "exec")
	task.User = "nobody"
	task.Config = map[string]any{"command": "/usr/bin/node", "args": []string{"-e", s.Source}}
	env := map[string]string{"FNHOOK_BENCH_HOST": "0.0.0.0", "FNHOOK_BENCH_PORT": "8080"}
	for k, v := range s.Env {
		env[k] = v
	}
	task.Env = env
	task.Resources = &nomad.Resources{CPU: new(s.CPUMHz), MemoryMB: new(s.MemoryMB)}
	task.KillTimeout = new(5 * time.Second)
	tg.AddTask(task)
	job.AddTaskGroup(tg)
	return job
}

// waitAddress waits for the job's allocation to run and returns its mapped address.
func (j *Job) waitAddress(ctx context.Context) (string, error) {
	var last string
	for {
		allocs, _, err := j.c.Jobs().Allocations(j.id, false, (&nomad.QueryOptions{}).WithContext(ctx))
		if err == nil {
			for _, stub := range allocs {
				switch stub.ClientStatus {
				case nomad.AllocClientStatusFailed, nomad.AllocClientStatusLost, nomad.AllocClientStatusComplete:
					return "", fmt.Errorf("allocation %s ended (%s): %s", stub.ID, stub.ClientStatus, taskEvents(stub))
				case nomad.AllocClientStatusRunning:
					a, _, err := j.c.Allocations().Info(stub.ID, (&nomad.QueryOptions{}).WithContext(ctx))
					if err != nil {
						return "", fmt.Errorf("allocation %s: %w", stub.ID, err)
					}
					if addr := address(a.AllocatedResources); addr != "" {
						return addr, nil
					}
				}
				last = stub.ClientStatus
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no running allocation (last status %q): %w", last, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func taskEvents(stub *nomad.AllocationListStub) string {
	var msgs []string
	for name, st := range stub.TaskStates {
		for _, e := range st.Events {
			if e.DisplayMessage != "" {
				msgs = append(msgs, name+": "+e.DisplayMessage)
			}
		}
	}
	return strings.Join(msgs, "; ")
}

func address(r *nomad.AllocatedResources) string {
	if r == nil {
		return ""
	}
	for _, p := range r.Shared.Ports {
		if p.Label == portLabel && p.Value > 0 {
			host := p.HostIP
			if host == "" || host == "0.0.0.0" {
				host = "127.0.0.1"
			}
			return net.JoinHostPort(host, strconv.Itoa(p.Value))
		}
	}
	return ""
}

// waitHTTP polls url until it answers 200.
func waitHTTP(ctx context.Context, url string) error {
	client := &http.Client{Timeout: time.Second}
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not answer: %v: %w", url, last, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop stops the job without purging, waits (within ctx) until its allocations are
// terminal on the client, then purges it: a purge right away leaves the client's
// executor, mounts and network namespace behind when the agent stops soon after.
func (j *Job) Stop(ctx context.Context) error {
	if _, _, err := j.c.Jobs().Deregister(j.id, false, (&nomad.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("stop bridge job %s: %w", j.id, err)
	}
	for {
		allocs, _, err := j.c.Jobs().Allocations(j.id, true, (&nomad.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return fmt.Errorf("allocations of %s: %w", j.id, err)
		}
		done := true
		for _, a := range allocs {
			if a.ClientStatus == nomad.AllocClientStatusRunning || a.ClientStatus == nomad.AllocClientStatusPending {
				done = false
			}
		}
		if done {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bridge job %s still stopping: %w", j.id, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	if _, _, err := j.c.Jobs().Deregister(j.id, true, (&nomad.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("purge bridge job %s: %w", j.id, err)
	}
	return nil
}
