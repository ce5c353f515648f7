package scenario

import (
	"fmt"
	"slices"

	"github.com/fnhook/fnhook/bench/proc"
	"github.com/fnhook/fnhook/bench/report"
)

// gatewayExe is how the gateway's process is found: the fnhook-gateway allocation runs
// the binary at …/bin/gateway.
const gatewayExe = "/bin/gateway"

// costProbe reads what the gateway and the runners use, to report their cost per warm
// call (fnhook#16). The runner serving the warm tenant is the one whose processes used
// the most CPU over the window: the bench calls only that tenant meanwhile.
type costProbe struct {
	fs      proc.FS
	gateway []int
	// runners holds the parent and child pids of every runner found when the probe was
	// made, by allocation and role.
	runners map[string]map[string][]int
}

// newCostProbe finds the gateway and the runners on this host.
func (b *Bench) newCostProbe() (*costProbe, error) {
	gw, err := b.proc.FindByExe(gatewayExe)
	if err != nil {
		return nil, fmt.Errorf("find the gateway's process: %w", err)
	}
	if len(gw) == 0 {
		return nil, fmt.Errorf("no process runs …%s on this host", gatewayExe)
	}
	s, err := b.proc.Snapshot(runnerTask, false)
	if err != nil {
		return nil, fmt.Errorf("find the runners' processes: %w", err)
	}
	p := &costProbe{fs: b.proc, gateway: gw, runners: map[string]map[string][]int{}}
	for alloc, r := range s.Runners {
		roles := map[string][]int{}
		for _, pr := range r.Processes {
			if pr.Role == proc.RoleParent || pr.Role == proc.RoleChild {
				roles[pr.Role] = append(roles[pr.Role], pr.PID)
			}
		}
		if len(roles) > 0 {
			p.runners[alloc] = roles
		}
	}
	if len(p.runners) == 0 {
		return nil, fmt.Errorf("no runner process on this host (no process in a cgroup …/<alloc-id>.%s)", runnerTask)
	}
	return p, nil
}

// reading is what the probed processes had used at one moment. A runner whose processes
// could not be read (it exited) is left out.
type reading struct {
	gateway proc.Usage
	err     error
	runners map[string]map[string]proc.Usage
}

// read reads every probed process now.
func (p *costProbe) read() reading {
	rd := reading{runners: map[string]map[string]proc.Usage{}}
	rd.gateway, rd.err = p.fs.UsageOf(p.gateway)
	for alloc, roles := range p.runners {
		us := map[string]proc.Usage{}
		ok := true
		for role, pids := range roles {
			u, err := p.fs.UsageOf(pids)
			if err != nil {
				ok = false
				break
			}
			us[role] = u
		}
		if ok {
			rd.runners[alloc] = us
		}
	}
	return rd
}

// busiest is the allocation whose processes used the most CPU between before and after,
// among those read both times, or "" when none was.
func busiest(before, after map[string]map[string]proc.Usage) string {
	best, bestCPU := "", int64(-1)
	allocs := make([]string, 0, len(after))
	for alloc := range after {
		allocs = append(allocs, alloc)
	}
	slices.Sort(allocs) // ties go to the first id, the same every time
	for _, alloc := range allocs {
		b0, ok := before[alloc]
		if !ok {
			continue
		}
		var cpu int64
		for role, u := range after[alloc] {
			cpu += int64(u.Sub(b0[role]).CPU)
		}
		if cpu > bestCPU {
			best, bestCPU = alloc, cpu
		}
	}
	return best
}

// cost is what the gateway and the busiest runner used between r0 and r1, per call.
func (p *costProbe) cost(r0, r1 reading, calls int64) *report.Cost {
	c := &report.Cost{Calls: calls}
	if err := firstErr(r0.err, r1.err); err != nil {
		c.Error = "gateway: " + err.Error()
	} else {
		c.Processes = append(c.Processes, report.PerCall(report.ProcGateway, p.gateway, r1.gateway.Sub(r0.gateway), calls))
	}
	alloc := busiest(r0.runners, r1.runners)
	if alloc == "" {
		c.Error = joinErr(c.Error, "no runner could be read before and after the window")
		return c
	}
	for _, x := range []struct{ role, name string }{
		{proc.RoleParent, report.ProcRunnerParent},
		{proc.RoleChild, report.ProcRunnerChild},
	} {
		if pids := p.runners[alloc][x.role]; len(pids) > 0 {
			d := r1.runners[alloc][x.role].Sub(r0.runners[alloc][x.role])
			c.Processes = append(c.Processes, report.PerCall(x.name, pids, d, calls))
		}
	}
	return c
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
