package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroupParent is the cgroup (on each hierarchy) that holds one child per sandboxed run.
// It sits at the top of the hierarchy rather than under the builder's own cgroup, so it
// outlives a restarted builder whose own cgroup went away, and Sweep finds every leftover.
const cgroupParent = "fnhook-build"

// cgroups creates the per-run cgroups on cgroup v2 (one unified hierarchy) or v1 (one
// hierarchy per controller).
type cgroups struct {
	v2      bool
	parents []string // v2: [<root>/fnhook-build]; v1: the memory and pids parents in use
	memory  string   // the parent on the memory hierarchy ("" when not limited)
	pids    string   // the parent on the pids hierarchy ("" when not limited)
}

// setupCgroups finds the hierarchies under root (normally /sys/fs/cgroup) and creates the
// parents. It wants memory and pids controllers only for the limits that are set.
func setupCgroups(root string, lim Limits) (*cgroups, error) {
	if lim.MemoryBytes <= 0 && lim.Pids <= 0 {
		return nil, nil
	}
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err == nil {
		return setupV2(root, lim)
	}
	return setupV1(root, lim)
}

func setupV2(root string, lim Limits) (*cgroups, error) {
	var want []string
	if lim.MemoryBytes > 0 {
		want = append(want, "memory")
	}
	if lim.Pids > 0 {
		want = append(want, "pids")
	}
	parent := filepath.Join(root, cgroupParent)
	if err := os.Mkdir(parent, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("cgroup v2: %w", err)
	}
	// Controllers must be enabled on the way down: in the root for the parent, in the
	// parent for each run's cgroup. The root may hold processes; the parent never does.
	for _, dir := range []string{root, parent} {
		for _, c := range want {
			if err := enableController(dir, c); err != nil {
				return nil, fmt.Errorf("cgroup v2: enable %s in %s: %w", c, dir, err)
			}
		}
	}
	cg := &cgroups{v2: true, parents: []string{parent}}
	if lim.MemoryBytes > 0 {
		cg.memory = parent
	}
	if lim.Pids > 0 {
		cg.pids = parent
	}
	return cg, nil
}

func enableController(dir, c string) error {
	have, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if err != nil {
		return err
	}
	for _, f := range strings.Fields(string(have)) {
		if f == c {
			return nil
		}
	}
	return os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+"+c), 0o644)
}

func setupV1(root string, lim Limits) (*cgroups, error) {
	cg := &cgroups{}
	mk := func(controller string) (string, error) {
		h := filepath.Join(root, controller)
		if _, err := os.Stat(filepath.Join(h, "cgroup.procs")); err != nil {
			return "", fmt.Errorf("cgroup v1: no %s hierarchy at %s", controller, h)
		}
		p := filepath.Join(h, cgroupParent)
		if err := os.Mkdir(p, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("cgroup v1: %w", err)
		}
		cg.parents = append(cg.parents, p)
		return p, nil
	}
	var err error
	if lim.MemoryBytes > 0 {
		if cg.memory, err = mk("memory"); err != nil {
			return nil, err
		}
	}
	if lim.Pids > 0 {
		if cg.pids, err = mk("pids"); err != nil {
			return nil, err
		}
	}
	return cg, nil
}

// cgroup is one run's cgroup on each hierarchy in use.
type cgroup struct {
	v2     bool
	memory string // "" when memory is not limited
	pids   string // "" when pids are not limited
	dirs   []string
}

// create makes the run's cgroups named name and sets the limits. The caller calls remove.
func (c *cgroups) create(name string, lim Limits) (*cgroup, error) {
	if c == nil {
		return nil, nil
	}
	g := &cgroup{v2: c.v2}
	mk := func(parent string) (string, error) {
		for _, d := range g.dirs {
			if filepath.Dir(d) == parent {
				return d, nil // v2: memory and pids share one cgroup
			}
		}
		d := filepath.Join(parent, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			return "", err
		}
		g.dirs = append(g.dirs, d)
		return d, nil
	}
	fail := func(err error) (*cgroup, error) {
		_ = g.remove()
		return nil, fmt.Errorf("cgroup %s: %w", name, err)
	}
	var err error
	if c.memory != "" {
		if g.memory, err = mk(c.memory); err != nil {
			return fail(err)
		}
		limit := strconv.FormatInt(lim.MemoryBytes, 10)
		if c.v2 {
			if err := write(g.memory, "memory.max", limit); err != nil {
				return fail(err)
			}
			// No swap either, where swap is accounted: the limit is the limit.
			_ = write(g.memory, "memory.swap.max", "0")
		} else {
			if err := write(g.memory, "memory.limit_in_bytes", limit); err != nil {
				return fail(err)
			}
			// memsw (memory+swap) exists only with swap accounting; it must be >= the limit.
			if _, err := os.Stat(filepath.Join(g.memory, "memory.memsw.limit_in_bytes")); err == nil {
				if err := write(g.memory, "memory.memsw.limit_in_bytes", limit); err != nil {
					return fail(err)
				}
			}
		}
	}
	if c.pids != "" {
		if g.pids, err = mk(c.pids); err != nil {
			return fail(err)
		}
		if err := write(g.pids, "pids.max", strconv.Itoa(lim.Pids)); err != nil {
			return fail(err)
		}
	}
	return g, nil
}

func write(dir, file, value string) error {
	if err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0o644); err != nil {
		return fmt.Errorf("set %s: %w", file, err)
	}
	return nil
}

// procFiles lists the files a process writes "0" into to join the run's cgroups.
func (g *cgroup) procFiles() []string {
	if g == nil {
		return nil
	}
	var files []string
	for _, d := range g.dirs {
		files = append(files, filepath.Join(d, "cgroup.procs"))
	}
	return files
}

// events reads how often the run was OOM-killed and how often a fork hit the pids limit.
func (g *cgroup) events() (oomKills, pidsMax int) {
	if g == nil {
		return 0, 0
	}
	if g.memory != "" {
		file := "memory.oom_control" // v1: holds "oom_kill N" since Linux 4.13
		if g.v2 {
			file = "memory.events"
		}
		oomKills = readCounter(filepath.Join(g.memory, file), "oom_kill")
	}
	if g.pids != "" {
		pidsMax = readCounter(filepath.Join(g.pids, "pids.events"), "max")
	}
	return oomKills, pidsMax
}

// peakMemory is the most memory the run used, in bytes (0 when unknown).
func (g *cgroup) peakMemory() int64 {
	if g == nil || g.memory == "" {
		return 0
	}
	file := "memory.max_usage_in_bytes"
	if g.v2 {
		file = "memory.peak" // Linux 5.19+
	}
	b, err := os.ReadFile(filepath.Join(g.memory, file))
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
}

func readCounter(path, key string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == key {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// remove kills whatever still runs in the run's cgroups and removes them.
func (g *cgroup) remove() error {
	if g == nil {
		return nil
	}
	var errs []error
	for _, d := range g.dirs {
		if err := removeCgroup(d, 2*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeCgroup removes the cgroup dir, killing its processes first, trying for up to wait.
func removeCgroup(dir string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		err := syscall.Rmdir(dir)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		if b, rerr := os.ReadFile(filepath.Join(dir, "cgroup.procs")); rerr == nil {
			for _, f := range strings.Fields(string(b)) {
				if pid, _ := strconv.Atoi(f); pid > 0 {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sweep removes the runs' cgroups older than cutoff (left by a builder that was killed).
// A cgroup that still holds a process is left alone: rmdir refuses it.
func (c *cgroups) sweep(cutoff time.Time) int {
	if c == nil {
		return 0
	}
	n := 0
	for _, p := range c.parents {
		entries, err := os.ReadDir(p)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if !e.IsDir() {
				continue
			}
			info, err := e.Info()
			if err != nil || info.ModTime().After(cutoff) {
				continue
			}
			if syscall.Rmdir(filepath.Join(p, e.Name())) == nil {
				n++
			}
		}
	}
	return n
}
