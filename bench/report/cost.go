package report

import (
	"fmt"
	"strings"

	"github.com/fnhook/fnhook/bench/proc"
	"github.com/fnhook/fnhook/bench/stats"
)

// Names of the processes whose cost per call the warm case reports (fnhook#16).
const (
	ProcGateway      = "gateway"       // the fnhook-gateway allocation's /bin/gateway
	ProcRunnerParent = "runner parent" // the warm tenant's runner: its protocol server
	ProcRunnerChild  = "runner child"  // the warm tenant's runner: the tenant's node process(es)
)

// Cost is what the processes serving a load used per call over its measured window.
type Cost struct {
	// Calls is the calls the window is divided by (the load's counted requests).
	Calls     int64         `json:"calls"`
	Processes []ProcessCost `json:"processes"`
	// Error says why the cost is missing or partial.
	Error string `json:"error,omitempty"`
}

// ProcessCost is one process (or group of processes of one role) over a window: its
// totals and the same per call.
type ProcessCost struct {
	Name string `json:"name"`
	PIDs []int  `json:"pids"`
	// CPUMs is user + system time over the window; Switches the voluntary + involuntary
	// context switches of its threads.
	CPUMs       float64 `json:"cpuMs"`
	Voluntary   int64   `json:"voluntaryCtxSwitches"`
	Involuntary int64   `json:"involuntaryCtxSwitches"`
	// CPUUsPerCall and SwitchesPerCall are the totals divided by the window's calls.
	CPUUsPerCall    float64 `json:"cpuUsPerCall"`
	SwitchesPerCall float64 `json:"ctxSwitchesPerCall"`
}

// PerCall is the cost of process name (pids) that used d over a window of calls calls.
// With no calls the per-call figures are 0.
func PerCall(name string, pids []int, d proc.Usage, calls int64) ProcessCost {
	pc := ProcessCost{
		Name: name, PIDs: pids,
		CPUMs:     stats.Round3(float64(d.CPU.Microseconds()) / 1000),
		Voluntary: d.Voluntary, Involuntary: d.Involuntary,
	}
	if calls > 0 {
		pc.CPUUsPerCall = stats.Round3(float64(d.CPU.Nanoseconds()) / 1000 / float64(calls))
		pc.SwitchesPerCall = stats.Round3(float64(d.Switches()) / float64(calls))
	}
	return pc
}

// Of returns the cost of process name, or nil.
func (c *Cost) Of(name string) *ProcessCost {
	if c == nil {
		return nil
	}
	for i := range c.Processes {
		if c.Processes[i].Name == name {
			return &c.Processes[i]
		}
	}
	return nil
}

// writeCosts renders the cost per call of the loads of s that have one.
func writeCosts(b *strings.Builder, name string, s Server) {
	var loads []*Load
	for _, l := range []*Load{s.Go, s.Wrk, s.Serial} {
		if l != nil && l.Cost != nil {
			loads = append(loads, l)
		}
	}
	if len(loads) == 0 {
		return
	}
	fmt.Fprintf(b, "\n### %s: CPU time and context switches per call\n\n", name)
	b.WriteString("Deltas over each load's measured window, divided by its calls: CPU = utime + stime of /proc/<pid>/stat; " +
		"switches = voluntary + nonvoluntary, summed over /proc/<pid>/task/*/status.\n\n")
	b.WriteString("| load | req/s | calls | process | pids | CPU µs / call | switches / call | voluntary | involuntary |\n")
	b.WriteString("|---|--:|--:|---|---|--:|--:|--:|--:|\n")
	for _, l := range loads {
		tool := l.Tool
		if l == s.Serial {
			tool = "go, 1 at a time"
		}
		if l.Cost.Error != "" {
			fmt.Fprintf(b, "| %s | %.0f | %d | - | failed: %s | | | | |\n", tool, l.RPS, l.Cost.Calls, cell(l.Cost.Error))
		}
		for _, p := range l.Cost.Processes {
			pids := make([]string, len(p.PIDs))
			for i, pid := range p.PIDs {
				pids[i] = fmt.Sprint(pid)
			}
			fmt.Fprintf(b, "| %s | %.0f | %d | %s | %s | %.1f | %.2f | %d | %d |\n", tool, l.RPS, l.Cost.Calls, p.Name,
				strings.Join(pids, ","), p.CPUUsPerCall, p.SwitchesPerCall, p.Voluntary, p.Involuntary)
		}
	}
}
