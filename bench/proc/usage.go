package proc

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Usage is what a process has used so far: its CPU time (user + system, every thread,
// from /proc/<pid>/stat; not its reaped children's) and its context switches, summed over
// its live threads' /proc/<pid>/task/<tid>/status (the process's own status file counts
// only its main thread). Switches of threads that exited are not counted.
type Usage struct {
	CPU         time.Duration
	Voluntary   int64
	Involuntary int64
}

// Switches is the voluntary and involuntary context switches together.
func (u Usage) Switches() int64 { return u.Voluntary + u.Involuntary }

// Add returns the sum of u and o.
func (u Usage) Add(o Usage) Usage {
	return Usage{CPU: u.CPU + o.CPU, Voluntary: u.Voluntary + o.Voluntary, Involuntary: u.Involuntary + o.Involuntary}
}

// Sub returns u - o: what was used between an earlier reading o and u.
func (u Usage) Sub(o Usage) Usage {
	return Usage{CPU: u.CPU - o.CPU, Voluntary: u.Voluntary - o.Voluntary, Involuntary: u.Involuntary - o.Involuntary}
}

// ParseCtxtSwitches reads voluntary_ctxt_switches and nonvoluntary_ctxt_switches from a
// /proc/<pid>/status (or task status) file; both must be present.
func ParseCtxtSwitches(r io.Reader) (voluntary, involuntary int64, err error) {
	seen, err := scanFields(r, "status", "", map[string]*int64{
		"voluntary_ctxt_switches": &voluntary, "nonvoluntary_ctxt_switches": &involuntary,
	})
	if err != nil {
		return 0, 0, err
	}
	if len(seen) != 2 {
		return 0, 0, errors.New("status: no voluntary_ctxt_switches and nonvoluntary_ctxt_switches lines")
	}
	return voluntary, involuntary, nil
}

// Usage reads what pid has used so far.
func (fs FS) Usage(pid int) (Usage, error) {
	st, err := fs.Stat(pid)
	if err != nil {
		return Usage{}, err
	}
	u := Usage{CPU: Ticks(st.UTime + st.STime)}
	dir := filepath.Join(fs.Proc, strconv.Itoa(pid), "task")
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return Usage{}, err
	}
	for _, t := range tasks {
		f, err := os.Open(filepath.Join(dir, t.Name(), "status"))
		if errors.Is(err, os.ErrNotExist) {
			continue // the thread exited meanwhile
		}
		if err != nil {
			return Usage{}, err
		}
		v, n, err := ParseCtxtSwitches(f)
		f.Close()
		if err != nil {
			return Usage{}, fmt.Errorf("pid %d thread %s: %w", pid, t.Name(), err)
		}
		u.Voluntary += v
		u.Involuntary += n
	}
	return u, nil
}

// UsageOf sums Usage over pids.
func (fs FS) UsageOf(pids []int) (Usage, error) {
	var sum Usage
	for _, pid := range pids {
		u, err := fs.Usage(pid)
		if err != nil {
			return Usage{}, fmt.Errorf("usage of pid %d: %w", pid, err)
		}
		sum = sum.Add(u)
	}
	return sum, nil
}

// FindByExe lists the processes whose command line's first word ends in suffix (e.g.
// "/bin/gateway"), in /proc order.
func (fs FS) FindByExe(suffix string) ([]int, error) {
	entries, err := os.ReadDir(fs.Proc)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(fs.Proc, e.Name(), "cmdline"))
		if err != nil {
			continue // gone, or a kernel thread we may not read
		}
		first, _, _ := strings.Cut(string(raw), "\x00")
		if first != "" && strings.HasSuffix(first, suffix) {
			out = append(out, pid)
		}
	}
	return out, nil
}
