package scenario

import (
	"testing"
	"time"

	"github.com/fnhook/fnhook/bench/platform"
	"github.com/fnhook/fnhook/bench/proc"
	"github.com/fnhook/fnhook/bench/report"
)

// runner builds a runner with the given PSS (kB) and CPU per role, and task CPU.
func runner(id string, pss map[string]int64, cpuTicks map[string]int64, task time.Duration) *proc.Runner {
	r := &proc.Runner{Alloc: id, TaskCPU: task, TaskCPUFromCgroup: true}
	for _, role := range proc.Roles {
		if _, ok := pss[role]; !ok {
			continue
		}
		r.Processes = append(r.Processes, proc.Process{
			Stat:   proc.Stat{UTime: cpuTicks[role]},
			Role:   role,
			Memory: proc.Memory{PssKB: pss[role], RssKB: 2 * pss[role]},
		})
	}
	return r
}

func TestMemoryOf(t *testing.T) {
	full := map[string]int64{proc.RoleExecutor: 20480, proc.RoleLogmon: 10240, proc.RoleParent: 10240, proc.RoleChild: 10240} // 50 MB
	noLogmon := map[string]int64{proc.RoleExecutor: 20480, proc.RoleParent: 10240, proc.RoleChild: 10240}                     // 40 MB
	s := proc.Snapshot{Runners: map[string]*proc.Runner{
		"a": runner("a", full, nil, 0),
		"b": runner("b", noLogmon, nil, 0),
	}}
	m := memoryOf(s, "at rest", platform.Pool{Idle: 2, Assigned: 0})
	if m.Runners != 2 || m.PssMB != 45 || m.PssMinMB != 40 || m.PssMaxMB != 50 || m.RssMB != 90 || m.WithLogmon != 1 {
		t.Fatalf("memory %+v", m)
	}
	if m.RoleMB[proc.RoleExecutor] != 20 || m.RoleMB[proc.RoleLogmon] != 5 || m.RoleMB[proc.RoleChild] != 10 {
		t.Fatalf("per role %v", m.RoleMB)
	}
	if m.When != "at rest" || m.PoolIdle != 2 {
		t.Fatalf("memory %+v", m)
	}
	if empty := memoryOf(proc.Snapshot{}, "x", platform.Pool{}); empty.Runners != 0 || empty.PssMinMB != 0 {
		t.Fatalf("no runners: %+v", empty)
	}
}

func TestStartCost(t *testing.T) {
	roles := map[string]int64{proc.RoleExecutor: 1, proc.RoleLogmon: 1, proc.RoleParent: 1, proc.RoleChild: 1}
	cpu := map[string]int64{proc.RoleExecutor: 5, proc.RoleLogmon: 3} // 50 ms, 30 ms
	old := runner("old", roles, cpu, time.Second)
	s0 := proc.Snapshot{Runners: map[string]*proc.Runner{"old": old}, AgentChildren: map[int]time.Duration{1: time.Second, 2: 2 * time.Second}}
	s1 := proc.Snapshot{
		Runners: map[string]*proc.Runner{
			"old": old,
			"n1":  runner("n1", roles, cpu, 200*time.Millisecond),
			"n2":  runner("n2", roles, cpu, 400*time.Millisecond),
		},
		AgentChildren: map[int]time.Duration{1: time.Second, 3: 0, 4: 0},
	}
	tests := []struct {
		name     string
		created  map[string]bool
		others   int
		agentCPU time.Duration
		idle     float64
		window   time.Duration
		check    func(t *testing.T, st report.RunnerStart)
	}{
		{"two starts", map[string]bool{"n1": true, "n2": true}, 0, 4 * time.Second, 0.1, 10 * time.Second, func(t *testing.T, st report.RunnerStart) {
			// Agent: 4 s - pid 2's 2 s (exited in the window) - 0.1 s/s * 10 s = 1 s, over 2 starts.
			want(t, st.Starts == 2 && st.Measured == 2 && st.ReapedDuringWindow == 1, "counts %+v", st)
			want(t, st.AgentS == 0.5 && st.ExecutorS == 0.05 && st.LogmonS == 0.03 && st.TaskS == 0.3, "figures %+v", st)
			want(t, st.CPUS == 0.88 && st.Error == "", "total %+v", st)
		}},
		{"other allocations share the agent", map[string]bool{"n1": true, "n2": true}, 2, 4 * time.Second, 0.1, 10 * time.Second, func(t *testing.T, st report.RunnerStart) {
			want(t, st.AgentS == 0.25 && st.OtherStarts == 2, "figures %+v", st)
		}},
		{"a start already present before is not measured", map[string]bool{"old": true, "n1": true}, 0, 3 * time.Second, 0, time.Second, func(t *testing.T, st report.RunnerStart) {
			want(t, st.Starts == 2 && st.Measured == 1 && st.TaskS == 0.2 && st.AgentS == 0.5, "figures %+v", st)
		}},
		{"a busy neighbour does not make it negative", map[string]bool{"n1": true}, 0, 2 * time.Second, 1, 10 * time.Second, func(t *testing.T, st report.RunnerStart) {
			want(t, st.AgentS == 0, "agent %+v", st)
		}},
		{"no starts", map[string]bool{}, 0, time.Second, 0, time.Second, func(t *testing.T, st report.RunnerStart) {
			want(t, st.Error != "" && st.CPUS == 0, "figures %+v", st)
		}},
		{"starts not found on the host", map[string]bool{"gone": true}, 0, time.Second, 0, time.Second, func(t *testing.T, st report.RunnerStart) {
			want(t, st.Error != "" && st.Measured == 0 && st.CPUS == 0, "figures %+v", st)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.check(t, startCost(s0, s1, tt.created, tt.others, tt.agentCPU, tt.idle, tt.window))
		})
	}
}

func want(t *testing.T, ok bool, format string, args ...any) {
	t.Helper()
	if !ok {
		t.Fatalf(format, args...)
	}
}
