package load

import (
	"fmt"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// LoadCPU is the core every load generator is pinned to (fnhook#16): the Go generator's
// threads while it runs, wrk through taskset. Each server under test then competes with
// the same one-core client, and has the other cores to itself.
const LoadCPU = 0

// Pin moves every thread of this process onto cpu and runs Go on one P, as `taskset -c
// cpu` would at start; restore puts the threads back on the cores they had and Go's
// GOMAXPROCS to what it was. New threads inherit their creator's affinity, so the whole process
// stays on cpu until restore. Processes started meanwhile inherit it too: start none.
func Pin(cpu int) (restore func(), err error) {
	var before unix.CPUSet
	if err := unix.SchedGetaffinity(0, &before); err != nil {
		return nil, fmt.Errorf("pin the load generator: %w", err)
	}
	var one unix.CPUSet
	one.Set(cpu)
	if err := setThreads(&one); err != nil {
		setThreads(&before)
		return nil, fmt.Errorf("pin the load generator to cpu %d: %w", cpu, err)
	}
	prev := runtime.GOMAXPROCS(1)
	return func() {
		setThreads(&before)
		runtime.GOMAXPROCS(prev)
	}, nil
}

// setThreads sets the affinity of every thread of this process, again until a pass finds
// no thread it had not set (a thread may be created during a pass).
func setThreads(set *unix.CPUSet) error {
	done := map[int]bool{}
	for pass := 0; pass < 10; pass++ {
		entries, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		fresh := false
		for _, e := range entries {
			tid, err := strconv.Atoi(e.Name())
			if err != nil || done[tid] {
				continue
			}
			if err := unix.SchedSetaffinity(tid, set); err != nil && err != unix.ESRCH {
				return fmt.Errorf("thread %d: %w", tid, err)
			}
			done[tid], fresh = true, true
		}
		if !fresh {
			return nil
		}
	}
	return nil
}
