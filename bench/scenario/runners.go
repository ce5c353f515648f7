package scenario

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/fnhook/fnhook/bench/platform"
	"github.com/fnhook/fnhook/bench/proc"
	"github.com/fnhook/fnhook/bench/report"
	"github.com/fnhook/fnhook/bench/stats"
)

// runnerTask is the name of the runner job's task (jobs/runner.nomad.hcl): a runner's
// processes sit in the cgroup …/<alloc-id>.runner.
const runnerTask = "runner"

// agentIdleWindow is how long the Nomad agent's CPU is watched, with the pool quiet,
// to know what it spends when no runner starts.
const agentIdleWindow = 5 * time.Second

// runnerCost measures the runners' memory with the pool at rest, then the CPU of
// starting runners, then the memory again with the bench's tenants assigned.
func (b *Bench) runnerCost(ctx context.Context, nc *nomad.Client) *report.Runners {
	res := &report.Runners{}
	if err := b.waitQuiet(ctx, nc); err != nil {
		b.log.Warn("pool not quiet before the runner memory; measuring anyway", "err", err)
	}
	m, err := b.runnerMemory(ctx, nc, "at rest (pool quiet)")
	if err != nil {
		res.Error = err.Error()
		return res
	}
	res.Memory = append(res.Memory, m)
	var after *report.RunnerMemory
	res.Start, after = b.runnerStart(ctx, nc)
	if after != nil {
		res.Memory = append(res.Memory, *after)
	}
	return res
}

// runnerMemory reads the PSS of every runner of the platform on the host.
func (b *Bench) runnerMemory(ctx context.Context, nc *nomad.Client, when string) (report.RunnerMemory, error) {
	pool := b.poolOrUnknown(ctx)
	s, err := b.platformRunners(ctx, nc, true)
	if err != nil {
		return report.RunnerMemory{}, fmt.Errorf("runner processes: %w", err)
	}
	if len(s.Runners) == 0 {
		return report.RunnerMemory{}, fmt.Errorf("no runner found on this host (no process in a cgroup …/<alloc-id>.%s)", runnerTask)
	}
	return memoryOf(s, when, pool), nil
}

// memoryOf summarises the memory of the runners in s.
func memoryOf(s proc.Snapshot, when string, pool platform.Pool) report.RunnerMemory {
	m := report.RunnerMemory{When: when, Runners: len(s.Runners), PoolIdle: pool.Idle, PoolAssigned: pool.Assigned,
		RoleMB: map[string]float64{}, PssMinMB: math.Inf(1)}
	if len(s.Runners) == 0 {
		m.PssMinMB = 0
		return m
	}
	for _, r := range s.Runners {
		all := r.MemoryOf("")
		pss := mb(all.PssKB)
		m.PssMB += pss
		m.RssMB += mb(all.RssKB)
		m.PssMinMB, m.PssMaxMB = min(m.PssMinMB, pss), max(m.PssMaxMB, pss)
		for _, role := range proc.Roles {
			m.RoleMB[role] += mb(r.MemoryOf(role).PssKB)
		}
		if r.Has(proc.RoleLogmon) {
			m.WithLogmon++
		}
	}
	n := float64(len(s.Runners))
	m.PssMB, m.RssMB = stats.Round3(m.PssMB/n), stats.Round3(m.RssMB/n)
	m.PssMinMB, m.PssMaxMB = stats.Round3(m.PssMinMB), stats.Round3(m.PssMaxMB)
	for role, v := range m.RoleMB {
		m.RoleMB[role] = stats.Round3(v / n)
	}
	return m
}

func mb(kb int64) float64 { return float64(kb) / 1024 }

// runnerStart measures the CPU time spent to start runners: with the pool quiet, it
// watches the Nomad agent's CPU for agentIdleWindow, then gives each of RunnerStarts new
// tenants a runner (its first call takes an idle runner, and the pool starts a
// replacement), waits until the pool has refilled, watches the agent idle again, and adds
// up the agent's CPU over the window less its idle rate (the lower of the two) and the
// CPU of each new runner's processes. It returns the
// memory of the runners then present too (the tenants' runners are assigned).
func (b *Bench) runnerStart(ctx context.Context, nc *nomad.Client) (*report.RunnerStart, *report.RunnerMemory) {
	st := &report.RunnerStart{}
	fail := func(err error) (*report.RunnerStart, *report.RunnerMemory) {
		st.Error = err.Error()
		return st, nil
	}
	if nc == nil {
		return fail(errors.New("no Nomad client"))
	}
	before := b.poolOrUnknown(ctx)
	c := b.cfg.TenantsConcurrency
	tenants, err := b.deployTenants(ctx, "start", b.cfg.RunnerStarts, c)
	defer b.deleteTenants(ctx, nc, tenants, c, before)
	if err != nil {
		return fail(err)
	}
	if err := b.waitQuiet(ctx, nc); err != nil {
		b.log.Warn("pool not quiet before the runner starts; measuring anyway", "err", err)
	}
	s0, err := b.platformRunners(ctx, nc, false)
	if err != nil {
		return fail(fmt.Errorf("runner processes: %w", err))
	}
	if s0.Agent == nil {
		return fail(errors.New("no nomad agent process found on this host"))
	}
	agent := s0.Agent.PID

	idleBefore, err := b.agentIdleRate(ctx, agent)
	if err != nil {
		return fail(err)
	}

	// The runners and the agent's children right at the start of the window.
	if s0, err = b.platformRunners(ctx, nc, false); err != nil {
		return fail(fmt.Errorf("runner processes: %w", err))
	}
	pool0 := b.poolOrUnknown(ctx)
	t0 := time.Now()
	a0, err := b.proc.Stat(agent)
	if err != nil {
		return fail(fmt.Errorf("nomad agent: %w", err))
	}
	for _, t := range tenants {
		if err := b.firstCall(ctx, t, "fn"); err != nil {
			return fail(err)
		}
	}
	// The handler refills a little after an assignment (FNHOOK_POOL_REFILL_DELAY).
	time.Sleep(time.Second)
	if err := b.waitPool(ctx, nc, settleLimit, pool0.Idle); err != nil {
		b.log.Warn("pool not refilled; measuring the starts so far", "err", err)
	}
	a1, err := b.proc.Stat(agent)
	t1 := time.Now()
	if err != nil || a1.StartTime != a0.StartTime {
		return fail(fmt.Errorf("the nomad agent (pid %d) is gone or restarted during the measurement", agent))
	}
	s1, err := b.platformRunners(ctx, nc, true)
	if err != nil {
		return fail(fmt.Errorf("runner processes: %w", err))
	}
	created, others, err := allocsSince(ctx, nc, t0)
	if err != nil {
		return fail(err)
	}
	// The agent's background is at most the lower of its rates before and after: another
	// user of this Nomad can only raise one of them.
	idleAfter, err := b.agentIdleRate(ctx, agent)
	if err != nil {
		return fail(err)
	}
	idleRate := min(idleBefore, idleAfter)
	*st = startCost(s0, s1, created, others, a1.CPU()-a0.CPU(), idleRate, t1.Sub(t0))
	if st.ReapedDuringWindow > 0 {
		b.log.Warn("nomad processes of other allocations exited during the runner starts; their CPU is taken out of the agent's",
			"exited", st.ReapedDuringWindow)
	}
	after := memoryOf(s1, fmt.Sprintf("after %d new tenants got runners", len(tenants)), b.poolOrUnknown(ctx))
	return st, &after
}

// startCost works out the CPU per runner start: the agent's CPU over the window less its
// idle rate, shared among the allocations created in the window (the platform's runners
// and others'), plus the mean CPU
// of those new runners' own processes (found in s1, not in s0). An executor or logmon of
// another allocation that exited in the window moved its whole CPU time into the agent's
// (as a reaped child): what it had used by s0 is taken out again.
func startCost(s0, s1 proc.Snapshot, created map[string]bool, others int, agentCPU time.Duration, idleRate float64, window time.Duration) report.RunnerStart {
	st := report.RunnerStart{Starts: len(created), OtherStarts: others, WindowS: stats.Round3(window.Seconds()), AgentIdleCPUPerS: stats.Round3(idleRate)}
	for pid, cpu := range s0.AgentChildren {
		if _, alive := s1.AgentChildren[pid]; !alive {
			st.ReapedDuringWindow++
			agentCPU -= cpu
		}
	}
	if st.Starts == 0 {
		st.Error = "no runner allocation was created in the window"
		return st
	}
	var exec, logmon, task time.Duration
	for id := range created {
		r := s1.Runners[id]
		if r == nil || s0.Runners[id] != nil {
			continue
		}
		st.Measured++
		exec += r.CPUOf(proc.RoleExecutor)
		logmon += r.CPUOf(proc.RoleLogmon)
		task += r.TaskCPU
		if !r.TaskCPUFromCgroup {
			st.TaskFromProcesses = true
		}
	}
	agent := max(0, agentCPU.Seconds()-idleRate*window.Seconds())
	st.AgentS = stats.Round3(agent / float64(st.Starts+st.OtherStarts))
	if st.Measured == 0 {
		st.Error = fmt.Sprintf("none of the %d runners created in the window was found on the host", st.Starts)
		return st
	}
	n := float64(st.Measured)
	st.ExecutorS = stats.Round3(exec.Seconds() / n)
	st.LogmonS = stats.Round3(logmon.Seconds() / n)
	st.TaskS = stats.Round3(task.Seconds() / n)
	st.CPUS = stats.Round3(st.AgentS + st.ExecutorS + st.LogmonS + st.TaskS)
	return st
}

// agentIdleRate watches the agent's CPU for agentIdleWindow and returns it in CPU
// seconds per second.
func (b *Bench) agentIdleRate(ctx context.Context, agent int) (float64, error) {
	s0, err := b.proc.Stat(agent)
	if err != nil {
		return 0, fmt.Errorf("nomad agent: %w", err)
	}
	t0 := time.Now()
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(agentIdleWindow):
	}
	s1, err := b.proc.Stat(agent)
	if err != nil {
		return 0, fmt.Errorf("nomad agent: %w", err)
	}
	return (s1.CPU() - s0.CPU()).Seconds() / time.Since(t0).Seconds(), nil
}

// allocsSince lists the runner allocations of the platform that Nomad created at or after
// t0, in any state, and counts the other allocations created meanwhile (another user of
// this Nomad, such as an integration test's runners).
func allocsSince(ctx context.Context, nc *nomad.Client, t0 time.Time) (runners map[string]bool, others int, err error) {
	allocs, _, err := nc.Allocations().List((&nomad.QueryOptions{Namespace: "*"}).WithContext(ctx))
	if err != nil {
		return nil, 0, fmt.Errorf("list allocations: %w", err)
	}
	runners = map[string]bool{}
	for _, a := range allocs {
		switch {
		case a.CreateTime < t0.UnixNano():
		case strings.HasPrefix(a.JobID, runnerJobPrefix):
			runners[a.ID] = true
		default:
			others++
		}
	}
	return runners, others, nil
}

// liveRunners lists the platform's runner allocations Nomad has running or starting: the
// host may also run other jobs' runners (an integration test's, prefixed otherwise).
func liveRunners(ctx context.Context, nc *nomad.Client) (map[string]bool, error) {
	allocs, _, err := nc.Allocations().List((&nomad.QueryOptions{Namespace: "*"}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("list allocations: %w", err)
	}
	out := map[string]bool{}
	for _, a := range allocs {
		live := a.ClientStatus == nomad.AllocClientStatusRunning || a.ClientStatus == nomad.AllocClientStatusPending
		if live && strings.HasPrefix(a.JobID, runnerJobPrefix) {
			out[a.ID] = true
		}
	}
	return out, nil
}

// platformRunners is a snapshot of this host's runners, restricted to the platform's
// runner allocations when Nomad can say which those are.
func (b *Bench) platformRunners(ctx context.Context, nc *nomad.Client, withMemory bool) (proc.Snapshot, error) {
	s, err := b.proc.Snapshot(runnerTask, withMemory)
	if err != nil || nc == nil {
		return s, err
	}
	live, err := liveRunners(ctx, nc)
	if err != nil {
		return s, err
	}
	for id := range s.Runners {
		if !live[id] {
			delete(s.Runners, id)
		}
	}
	return s, nil
}
