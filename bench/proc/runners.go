package proc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// FS is a /proc tree and the cgroup mount it refers to; tests use a fake tree.
type FS struct {
	Proc   string // normally /proc
	Cgroup string // normally /sys/fs/cgroup
}

// HostFS is this machine's /proc and cgroup mount.
func HostFS() FS { return FS{Proc: "/proc", Cgroup: "/sys/fs/cgroup"} }

// Process is one process of a runner, or the Nomad agent.
type Process struct {
	Stat
	Cmdline []string
	Role    string
	// Memory is read only when the snapshot asked for it.
	Memory Memory
}

// Runner is the processes of one runner allocation found on the host.
type Runner struct {
	Alloc     string
	Cgroup    Cgroup
	Processes []Process
	// TaskCPU is the CPU time of the task's cgroup (every task process, including exited
	// ones); when the cgroup cannot be read it is the sum of the live task processes'.
	TaskCPU time.Duration
	// TaskCPUFromCgroup says which of the two TaskCPU is.
	TaskCPUFromCgroup bool
}

// Has reports whether the runner has a process of role.
func (r *Runner) Has(role string) bool {
	return slices.ContainsFunc(r.Processes, func(p Process) bool { return p.Role == role })
}

// MemoryOf sums the memory of the runner's processes of role ("" for all).
func (r *Runner) MemoryOf(role string) Memory {
	var m Memory
	for _, p := range r.Processes {
		if role == "" || p.Role == role {
			m = m.Add(p.Memory)
		}
	}
	return m
}

// CPUOf is the CPU time, from their stat, of the runner's processes of role (the task's
// as a whole is TaskCPU).
func (r *Runner) CPUOf(role string) time.Duration {
	var d time.Duration
	for _, p := range r.Processes {
		if p.Role == role {
			d += p.CPU()
		}
	}
	return d
}

// Snapshot is every runner of the host at one moment, and the Nomad agent that runs them.
type Snapshot struct {
	At      time.Time
	Runners map[string]*Runner // by allocation id
	// Agent is the Nomad client (the parent of the runners' executors, or the only
	// `nomad agent` process when no runner runs); nil when none was found.
	Agent *Process
	// AgentChildren is the CPU time, by pid, of every nomad process the agent started
	// (the executors and logmons of all its allocations). When one exits, the agent reaps
	// it and its whole CPU time moves into the agent's CUTime and CSTime.
	AgentChildren map[int]time.Duration
}

// Snapshot reads the processes of every allocation of task (the runner job's task name)
// from fs, with their memory when withMemory is set (which needs the right to read other
// users' smaps_rollup: root).
func (fs FS) Snapshot(task string, withMemory bool) (Snapshot, error) {
	s := Snapshot{At: time.Now(), Runners: map[string]*Runner{}}
	entries, err := os.ReadDir(fs.Proc)
	if err != nil {
		return s, err
	}
	var agents []Process
	parentOfExecutors := map[int]int{}
	var nomads []Stat
	runner := func(alloc string) *Runner {
		r := s.Runners[alloc]
		if r == nil {
			r = &Runner{Alloc: alloc}
			s.Runners[alloc] = r
		}
		return r
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue // not a process
		}
		p, ok := fs.process(pid)
		if !ok {
			continue // gone meanwhile, or not readable
		}
		if raw, err := os.ReadFile(filepath.Join(fs.Proc, e.Name(), "cgroup")); err == nil {
			if c, ok := ParseCgroup(string(raw), task); ok {
				r := runner(c.Alloc)
				r.Cgroup = c
				r.Processes = append(r.Processes, p) // role set below, once all are known
				continue
			}
		}
		if !isNomad(p) || len(p.Cmdline) < 2 {
			continue
		}
		nomads = append(nomads, p.Stat)
		switch p.Cmdline[1] {
		case "agent":
			agents = append(agents, p)
		case "executor":
			// Its JSON argument names the task's log file in the allocation's folder.
			if alloc := AllocInPath(strings.Join(p.Cmdline, " ")); alloc != "" {
				p.Role = RoleExecutor
				r := runner(alloc)
				r.Processes = append(r.Processes, p)
				parentOfExecutors[p.PPID]++
			}
		case "logmon":
			// Its arguments come over a pipe; its open files are the allocation's logs.
			if alloc := fs.openAlloc(pid); alloc != "" {
				p.Role = RoleLogmon
				r := runner(alloc)
				r.Processes = append(r.Processes, p)
			}
		}
	}
	for alloc, r := range s.Runners {
		if r.Cgroup.Alloc == "" {
			delete(s.Runners, alloc) // an executor or logmon whose task is not running (any more)
			continue
		}
		fs.finish(r)
	}
	s.Agent = pickAgent(agents, parentOfExecutors)
	if s.Agent != nil {
		s.AgentChildren = map[int]time.Duration{}
		for _, st := range nomads {
			if st.PPID == s.Agent.PID {
				s.AgentChildren[st.PID] = st.CPU()
			}
		}
	}
	if withMemory {
		for _, r := range s.Runners {
			for i := range r.Processes {
				m, err := fs.memory(r.Processes[i].PID)
				if errors.Is(err, os.ErrNotExist) {
					continue // exited since the scan: counts as nothing
				}
				if err != nil {
					return s, fmt.Errorf("memory of pid %d (%s of runner %.8s): %w", r.Processes[i].PID, r.Processes[i].Role, r.Alloc, err)
				}
				r.Processes[i].Memory = m
			}
		}
	}
	return s, nil
}

// finish gives the task's processes their roles and reads the task's CPU time.
func (fs FS) finish(r *Runner) {
	task := map[int]bool{}
	for _, p := range r.Processes {
		if p.Role == "" {
			task[p.PID] = true
		}
	}
	var sum time.Duration
	for i, p := range r.Processes {
		if p.Role != "" {
			continue
		}
		sum += p.CPU()
		// The task's first process is the one whose parent is outside the task (its
		// executor); every process it started is the tenant's side.
		if task[p.PPID] {
			r.Processes[i].Role = RoleChild
		} else {
			r.Processes[i].Role = RoleParent
		}
	}
	if d, err := CgroupCPU(fs.Cgroup, r.Cgroup); err == nil {
		r.TaskCPU, r.TaskCPUFromCgroup = d, true
	} else {
		r.TaskCPU = sum
	}
	slices.SortFunc(r.Processes, func(a, b Process) int { return a.PID - b.PID })
}

// pickAgent is the common parent of the executors, else the only `nomad agent`.
func pickAgent(agents []Process, parentOfExecutors map[int]int) *Process {
	best, n := 0, 0
	for pid, c := range parentOfExecutors {
		if c > n {
			best, n = pid, c
		}
	}
	for i := range agents {
		if agents[i].PID == best {
			return &agents[i]
		}
	}
	if best == 0 && len(agents) == 1 {
		return &agents[0]
	}
	return nil
}

// process reads the stat and command line of pid.
func (fs FS) process(pid int) (Process, bool) {
	dir := filepath.Join(fs.Proc, strconv.Itoa(pid))
	raw, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return Process{}, false
	}
	st, err := ParseStat(strings.TrimSpace(string(raw)))
	if err != nil {
		return Process{}, false
	}
	p := Process{Stat: st}
	if raw, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
		p.Cmdline = strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	}
	return p, true
}

// Stat reads /proc/<pid>/stat.
func (fs FS) Stat(pid int) (Stat, error) {
	raw, err := os.ReadFile(filepath.Join(fs.Proc, strconv.Itoa(pid), "stat"))
	if err != nil {
		return Stat{}, err
	}
	return ParseStat(strings.TrimSpace(string(raw)))
}

func (fs FS) memory(pid int) (Memory, error) {
	f, err := os.Open(filepath.Join(fs.Proc, strconv.Itoa(pid), "smaps_rollup"))
	if err != nil {
		return Memory{}, err
	}
	defer f.Close()
	return ParseSmapsRollup(f)
}

// openAlloc is the allocation whose folder one of pid's open files is in, or "".
func (fs FS) openAlloc(pid int) string {
	dir := filepath.Join(fs.Proc, strconv.Itoa(pid), "fd")
	fds, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join(dir, fd.Name()))
		if err != nil {
			continue
		}
		if alloc := AllocInPath(target); alloc != "" {
			return alloc
		}
	}
	return ""
}

// isNomad reports whether p runs the nomad binary.
func isNomad(p Process) bool {
	return p.Comm == "nomad" || (len(p.Cmdline) > 0 && filepath.Base(p.Cmdline[0]) == "nomad")
}
