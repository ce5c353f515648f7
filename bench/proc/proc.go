// Package proc reads what the bench measures of runners from Linux's /proc and cgroup
// files: which processes make up each runner, their proportional memory (PSS, from
// smaps_rollup) and the CPU time they have used (from stat and the task's cgroup).
//
// A runner is one Nomad allocation of the runner job. Its processes, as seen from the
// host, are the task's processes (the runner's parent node process and the tenant's child),
// which sit in the allocation's task cgroup (…/<alloc-id>.<task> in /proc/<pid>/cgroup),
// and the `nomad executor` and `nomad logmon` the Nomad client starts for the allocation,
// which stay in the client's own cgroup: the executor names the allocation's folder on its
// command line, logmon holds the allocation's log files open.
package proc

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ClockTicks is USER_HZ, the unit of CPU times in /proc/<pid>/stat. It is 100 on every
// Linux architecture the platform runs on (getconf CLK_TCK); Go has no portable sysconf.
const ClockTicks = 100

// Roles of a runner's processes.
const (
	RoleExecutor = "executor" // nomad executor: starts and supervises the task
	RoleLogmon   = "logmon"   // nomad logmon: copies the task's stdout/stderr to files
	RoleParent   = "parent"   // the task's first process (the runner's protocol server)
	RoleChild    = "child"    // every other task process (the tenant's code)
)

// Roles lists the roles in the order reports show them.
var Roles = []string{RoleExecutor, RoleLogmon, RoleParent, RoleChild}

// Memory is what smaps_rollup says of one process, in KiB.
type Memory struct {
	RssKB     int64 `json:"rssKB"`
	PssKB     int64 `json:"pssKB"`
	PssAnonKB int64 `json:"pssAnonKB"`
	PssFileKB int64 `json:"pssFileKB"`
}

// Add returns the sum of m and o.
func (m Memory) Add(o Memory) Memory {
	return Memory{RssKB: m.RssKB + o.RssKB, PssKB: m.PssKB + o.PssKB, PssAnonKB: m.PssAnonKB + o.PssAnonKB, PssFileKB: m.PssFileKB + o.PssFileKB}
}

// ParseSmapsRollup reads /proc/<pid>/smaps_rollup. Rss and Pss must be present; the
// split of Pss into anonymous and file pages is read when the kernel gives it (5.x+).
func ParseSmapsRollup(r io.Reader) (Memory, error) {
	var m Memory
	seen, err := scanFields(r, "smaps_rollup", "kB", map[string]*int64{
		"Rss": &m.RssKB, "Pss": &m.PssKB, "Pss_Anon": &m.PssAnonKB, "Pss_File": &m.PssFileKB,
	})
	if err != nil {
		return m, err
	}
	if !seen["Rss"] || !seen["Pss"] {
		return m, errors.New("smaps_rollup: no Rss or Pss line")
	}
	return m, nil
}

// scanFields reads "Key: value [unit]" lines of a /proc file (what names it in errors)
// into the fields of the keys wanted, and tells which keys it saw. unit is the unit every
// value must carry ("" for none).
func scanFields(r io.Reader, what, unit string, want map[string]*int64) (map[string]bool, error) {
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		dst := want[key]
		if dst == nil {
			continue
		}
		f := strings.Fields(rest)
		want, in := 1, ""
		if unit != "" {
			want, in = 2, " in "+unit
		}
		if len(f) != want || (unit != "" && f[1] != unit) {
			return seen, fmt.Errorf("%s: %s: %q is not a number%s", what, key, strings.TrimSpace(rest), in)
		}
		v, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return seen, fmt.Errorf("%s: %s: %w", what, key, err)
		}
		*dst = v
		seen[key] = true
	}
	if err := sc.Err(); err != nil {
		return seen, fmt.Errorf("%s: %w", what, err)
	}
	return seen, nil
}

// Stat is the part of /proc/<pid>/stat the bench uses. CPU times are in clock ticks.
type Stat struct {
	PID, PPID int
	Comm      string
	// UTime and STime are the process's own user and system time, all threads included.
	UTime, STime int64
	// CUTime and CSTime are the times of children it has waited for.
	CUTime, CSTime int64
	// StartTime is when the process started, in ticks after boot.
	StartTime int64
}

// CPU is the process's own CPU time plus that of the children it reaped.
func (s Stat) CPU() time.Duration { return Ticks(s.UTime + s.STime + s.CUTime + s.CSTime) }

// Ticks converts clock ticks to a duration.
func Ticks(n int64) time.Duration { return time.Duration(n) * time.Second / ClockTicks }

// ParseStat reads one /proc/<pid>/stat line. The command name is in parentheses and may
// itself hold spaces and parentheses, so the fields are counted from the last ')'.
func ParseStat(line string) (Stat, error) {
	open, end := strings.IndexByte(line, '('), strings.LastIndexByte(line, ')')
	if open < 1 || end < open {
		return Stat{}, fmt.Errorf("stat: no (comm) in %.80q", line)
	}
	var s Stat
	pid, err := strconv.Atoi(strings.TrimSpace(line[:open]))
	if err != nil {
		return Stat{}, fmt.Errorf("stat: pid: %w", err)
	}
	s.PID, s.Comm = pid, line[open+1:end]
	// rest[0] is field 3 (state): field k of proc(5) is rest[k-3].
	rest := strings.Fields(line[end+1:])
	if len(rest) < 20 {
		return Stat{}, fmt.Errorf("stat: %d fields after the command name, want at least 20", len(rest))
	}
	fields := []struct {
		k   int
		dst *int64
	}{{14, &s.UTime}, {15, &s.STime}, {16, &s.CUTime}, {17, &s.CSTime}, {22, &s.StartTime}}
	for _, f := range fields {
		if *f.dst, err = strconv.ParseInt(rest[f.k-3], 10, 64); err != nil {
			return Stat{}, fmt.Errorf("stat: field %d: %w", f.k, err)
		}
	}
	ppid, err := strconv.Atoi(rest[1])
	if err != nil {
		return Stat{}, fmt.Errorf("stat: ppid: %w", err)
	}
	s.PPID = ppid
	return s, nil
}

// allocID is a Nomad allocation id.
const allocID = `[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`

// Cgroup is where /proc/<pid>/cgroup puts a process of a Nomad task.
type Cgroup struct {
	Alloc string
	// CPUAcct is the path of the cgroup v1 cpuacct hierarchy (controllers "cpuacct" or
	// "cpu,cpuacct"), relative to its mount; Unified is the cgroup v2 path. Either may be "".
	Controllers string
	CPUAcct     string
	Unified     string
}

// ParseCgroup reads /proc/<pid>/cgroup and returns the allocation whose task named task
// the process belongs to (a path ending in /<alloc-id>.<task>, or <alloc-id>.<task>.scope
// under cgroups v2), or ok false when it is not in such a task.
func ParseCgroup(text, task string) (c Cgroup, ok bool) {
	re := regexp.MustCompile(`/(` + allocID + `)\.` + regexp.QuoteMeta(task) + `(?:\.scope)?$`)
	for _, line := range strings.Split(text, "\n") {
		// hierarchy-ID:controller-list:cgroup-path
		parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(parts) != 3 {
			continue
		}
		m := re.FindStringSubmatch(parts[2])
		if m == nil {
			continue
		}
		c.Alloc, ok = m[1], true
		switch {
		case parts[0] == "0" && parts[1] == "":
			c.Unified = parts[2]
		case slices.Contains(strings.Split(parts[1], ","), "cpuacct"):
			c.Controllers, c.CPUAcct = parts[1], parts[2]
		}
	}
	return c, ok
}

// CgroupCPU is the CPU time used by every process that ever ran in cgroup c, read under
// sysfs (normally /sys/fs/cgroup): cpuacct.usage under cgroups v1, usage_usec of cpu.stat
// under v2.
func CgroupCPU(sysfs string, c Cgroup) (time.Duration, error) {
	if c.CPUAcct != "" {
		raw, err := os.ReadFile(filepath.Join(sysfs, c.Controllers, c.CPUAcct, "cpuacct.usage"))
		if err != nil {
			return 0, err
		}
		ns, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cpuacct.usage: %w", err)
		}
		return time.Duration(ns), nil
	}
	if c.Unified != "" {
		f, err := os.Open(filepath.Join(sysfs, c.Unified, "cpu.stat"))
		if err != nil {
			return 0, err
		}
		defer f.Close()
		return ParseCPUStat(f)
	}
	return 0, errors.New("no cpuacct or unified cgroup")
}

// ParseCPUStat reads usage_usec from a cgroup v2 cpu.stat file.
func ParseCPUStat(r io.Reader) (time.Duration, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == "usage_usec" {
			us, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("cpu.stat: usage_usec: %w", err)
			}
			return time.Duration(us) * time.Microsecond, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("cpu.stat: no usage_usec")
}

// allocDir finds the allocation id in a path or command line of the Nomad client:
// …/alloc/<alloc-id>/… (the client's data folder).
var allocDir = regexp.MustCompile(`/alloc/(` + allocID + `)/`)

// AllocInPath returns the allocation whose folder s names, or "".
func AllocInPath(s string) string {
	if m := allocDir.FindStringSubmatch(s); m != nil {
		return m[1]
	}
	return ""
}
