package proc

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// rollup is smaps_rollup of a runner's parent node process on the development VM.
const rollup = `00400000-7ffed31c9000 ---p 00000000 00:00 0                              [rollup]
Rss:               49516 kB
Pss:               17465 kB
Pss_Dirty:          7916 kB
Pss_Anon:           7916 kB
Pss_File:           9549 kB
Pss_Shmem:             0 kB
Shared_Clean:      38080 kB
Private_Dirty:      7916 kB
Swap:                  0 kB
SwapPss:               0 kB
`

func TestParseSmapsRollup(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		want    Memory
		wantErr bool
	}{
		{"kernel 5.x+", rollup, Memory{RssKB: 49516, PssKB: 17465, PssAnonKB: 7916, PssFileKB: 9549}, false},
		{"older kernel: no split of Pss", "Rss: 100 kB\nPss: 40 kB\n", Memory{RssKB: 100, PssKB: 40}, false},
		{"Pss_Dirty is not Pss", "Rss: 100 kB\nPss_Dirty: 40 kB\n", Memory{}, true},
		{"no Pss", "Rss: 100 kB\nSwap: 0 kB\n", Memory{}, true},
		{"not in kB", "Rss: 100 MB\nPss: 40 kB\n", Memory{}, true},
		{"garbage number", "Rss: x kB\nPss: 40 kB\n", Memory{}, true},
		{"empty", "", Memory{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSmapsRollup(strings.NewReader(tt.text))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr && got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestMemoryAdd(t *testing.T) {
	got := Memory{1, 2, 3, 4}.Add(Memory{10, 20, 30, 40})
	if got != (Memory{11, 22, 33, 44}) {
		t.Fatalf("Add = %+v", got)
	}
}

// statLine builds a stat line with the given command name, ppid and times (ticks).
func statLine(pid int, comm string, ppid int, utime, stime, cutime, cstime, start int64) string {
	f := make([]string, 50)
	for i := range f {
		f[i] = "0"
	}
	set := func(k int, v int64) { f[k-3] = strconv.FormatInt(v, 10) }
	f[0] = "S"
	set(4, int64(ppid))
	set(14, utime)
	set(15, stime)
	set(16, cutime)
	set(17, cstime)
	set(22, start)
	return strconv.Itoa(pid) + " (" + comm + ") " + strings.Join(f, " ")
}

func TestParseStat(t *testing.T) {
	// A real line: the executor of a runner.
	real := "10591 (nomad) S 9649 10591 10591 0 -1 4194560 4569 129 0 0 1 2 0 0 20 0 9 0 233792 2003632128 27127 18446744073709551615 4206592 49990165 140720799254720 0 0 0 0 2143420159 0 0 0 17 1 0 0 0 0 0"
	tests := []struct {
		name    string
		line    string
		want    Stat
		wantErr bool
	}{
		{"nomad executor", real, Stat{PID: 10591, PPID: 9649, Comm: "nomad", UTime: 1, STime: 2, StartTime: 233792}, false},
		{"command name with spaces and parentheses", statLine(7, "a) (b c", 3, 5, 6, 7, 8, 99),
			Stat{PID: 7, PPID: 3, Comm: "a) (b c", UTime: 5, STime: 6, CUTime: 7, CSTime: 8, StartTime: 99}, false},
		{"no command name", "12 S 1 2 3", Stat{}, true},
		{"cut short", "12 (node) S 1 2 3 4 5 6 7 8 9 10 11 12", Stat{}, true},
		{"garbage time", strings.Replace(real, " 1 2 0 0 20 ", " x 2 0 0 20 ", 1), Stat{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseStat(tt.line)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr && got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestStatCPU(t *testing.T) {
	s := Stat{UTime: 100, STime: 50, CUTime: 25, CSTime: 25}
	if got := s.CPU(); got != 2*time.Second {
		t.Fatalf("CPU = %v, want 2s (200 ticks)", got)
	}
}

const alloc = "8bc30463-63f0-3969-142e-b576d467cea3"

// cgroupV1 is /proc/<pid>/cgroup of a runner's node process on the development VM.
const cgroupV1 = `9:name=systemd:/nomad/` + alloc + `.runner
8:pids:/nomad/` + alloc + `.runner
4:memory:/nomad/` + alloc + `.runner
3:cpuset:/nomad/share
2:cpuacct:/nomad/` + alloc + `.runner
1:cpu:/nomad/` + alloc + `.runner
0::/nomad/` + alloc + `.runner
`

func TestParseCgroup(t *testing.T) {
	tests := []struct {
		name   string
		text   string
		task   string
		want   Cgroup
		wantOK bool
	}{
		{"cgroups v1, runner task", cgroupV1, "runner",
			Cgroup{Alloc: alloc, Controllers: "cpuacct", CPUAcct: "/nomad/" + alloc + ".runner", Unified: "/nomad/" + alloc + ".runner"}, true},
		{"cpu and cpuacct mounted together", "3:cpu,cpuacct:/nomad/" + alloc + ".runner\n", "runner",
			Cgroup{Alloc: alloc, Controllers: "cpu,cpuacct", CPUAcct: "/nomad/" + alloc + ".runner"}, true},
		{"cgroups v2 scope", "0::/nomad.slice/share.slice/" + alloc + ".runner.scope\n", "runner",
			Cgroup{Alloc: alloc, Unified: "/nomad.slice/share.slice/" + alloc + ".runner.scope"}, true},
		{"another task of an allocation", strings.ReplaceAll(cgroupV1, ".runner", ".gateway"), "runner", Cgroup{}, false},
		{"a task whose name only starts like it", strings.ReplaceAll(cgroupV1, ".runner", ".runner2"), "runner", Cgroup{}, false},
		{"the nomad client's own processes", "4:memory:/process_api/5095adb0f2d30a47c8dc705020e14d5e\n2:cpuacct:/\n0::/\n", "runner", Cgroup{}, false},
		{"not an allocation id", "0::/nomad/not-an-alloc.runner\n", "runner", Cgroup{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParseCgroup(tt.text, tt.task)
			if ok != tt.wantOK || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestParseCPUStat(t *testing.T) {
	tests := []struct {
		text    string
		want    time.Duration
		wantErr bool
	}{
		{"usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n", 1500 * time.Millisecond, false},
		{"user_usec 1000000\n", 0, true},
		{"usage_usec lots\n", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseCPUStat(strings.NewReader(tt.text))
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseCPUStat(%q) = %v, %v; want %v, error %v", tt.text, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestAllocInPath(t *testing.T) {
	tests := []struct{ s, want string }{
		{"/root/.cache/fnhook/state/nomad/data/alloc/" + alloc + "/alloc/logs/.runner.stdout.fifo", alloc},
		{`nomad executor {"LogFile":"/data/alloc/` + alloc + `/runner/executor.out","LogLevel":"debug"}`, alloc},
		{"/data/alloc/" + alloc, ""}, // the folder itself, not a file in it
		{"/dev/null", ""},
		{"pipe:[535003]", ""},
	}
	for _, tt := range tests {
		if got := AllocInPath(tt.s); got != tt.want {
			t.Errorf("AllocInPath(%q) = %q, want %q", tt.s, got, tt.want)
		}
	}
}

// fakeHost is a /proc tree and cgroup mount with one Nomad agent (pid 100) running two
// runners: A with an executor, a logmon, a parent and a child; B without a logmon (log
// collection off) and with an unreadable cgroup. Pid 300 is a gateway task's process
// and 400 its executor; 500 is an unrelated process.
func fakeHost(t *testing.T) (FS, string, string) {
	t.Helper()
	root := t.TempDir()
	fs := FS{Proc: filepath.Join(root, "proc"), Cgroup: filepath.Join(root, "cgroup")}
	a := "aaaaaaaa-0000-0000-0000-000000000001"
	b := "bbbbbbbb-0000-0000-0000-000000000002"
	g := "cccccccc-0000-0000-0000-000000000003"
	data := "/var/lib/nomad/alloc/"
	type p struct {
		pid, ppid int
		comm      string
		cmdline   []string
		cgroup    string
		fds       []string
		utime     int64
		pss       int64
		noSmaps   bool
		cutime    int64
	}
	executor := func(id, task string) []string {
		return []string{"/opt/nomad", "executor", `{"LogFile":"` + data + id + "/" + task + `/executor.out"}`}
	}
	procs := []p{
		{pid: 100, ppid: 1, comm: "nomad", cmdline: []string{"/opt/nomad", "agent", "-config", "x.hcl"}, utime: 500, cutime: 40},
		{pid: 110, ppid: 100, comm: "nomad", cmdline: []string{"/opt/nomad", "logmon"}, fds: []string{"/dev/null", data + a + "/alloc/logs/.runner.stdout.fifo"}, utime: 3, pss: 18000},
		{pid: 111, ppid: 100, comm: "nomad", cmdline: executor(a, "runner"), utime: 4, pss: 20000},
		{pid: 112, ppid: 111, comm: "node", cmdline: []string{"/usr/bin/node", "/runner/main.js"}, cgroup: "2:cpuacct:/nomad/" + a + ".runner\n", utime: 20, pss: 11000},
		{pid: 113, ppid: 112, comm: "node", cmdline: []string{"/usr/bin/node", "/runner/host.js"}, cgroup: "2:cpuacct:/nomad/" + a + ".runner\n", utime: 10, pss: 9000},
		{pid: 121, ppid: 100, comm: "nomad", cmdline: executor(b, "runner"), utime: 5, pss: 21000},
		{pid: 122, ppid: 121, comm: "node", cmdline: []string{"/usr/bin/node", "/runner/main.js"}, cgroup: "0::/nomad/" + b + ".runner\n", utime: 30, pss: 12000},
		{pid: 123, ppid: 122, comm: "node", cmdline: []string{"/usr/bin/node", "/runner/host.js"}, cgroup: "0::/nomad/" + b + ".runner\n", utime: 7, pss: 10000},
		{pid: 400, ppid: 100, comm: "nomad", cmdline: executor(g, "gateway"), utime: 9, pss: 20000},
		{pid: 300, ppid: 400, comm: "gateway", cmdline: []string{"/bin/gateway"}, cgroup: "2:cpuacct:/nomad/" + g + ".gateway\n", utime: 900, pss: 30000},
		{pid: 500, ppid: 1, comm: "sshd", cmdline: []string{"sshd"}, cgroup: "0::/\n", utime: 1, noSmaps: true},
	}
	for _, pr := range procs {
		dir := filepath.Join(fs.Proc, strconv.Itoa(pr.pid))
		write(t, filepath.Join(dir, "stat"), statLine(pr.pid, pr.comm, pr.ppid, pr.utime, 0, pr.cutime, 0, 1000)+"\n")
		write(t, filepath.Join(dir, "cmdline"), strings.Join(pr.cmdline, "\x00")+"\x00")
		cg := pr.cgroup
		if cg == "" {
			cg = "4:memory:/process_api/x\n0::/\n"
		}
		write(t, filepath.Join(dir, "cgroup"), cg)
		if !pr.noSmaps {
			write(t, filepath.Join(dir, "smaps_rollup"), "Rss: "+strconv.FormatInt(3*pr.pss, 10)+" kB\nPss: "+strconv.FormatInt(pr.pss, 10)+" kB\n")
		}
		if err := os.MkdirAll(filepath.Join(dir, "fd"), 0o755); err != nil {
			t.Fatal(err)
		}
		for i, target := range pr.fds {
			if err := os.Symlink(target, filepath.Join(dir, "fd", strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(t, filepath.Join(fs.Proc, "self"), "") // not a process folder
	// Runner A's cgroup says 0.45 s; B's (cgroups v2 path) is missing.
	write(t, filepath.Join(fs.Cgroup, "cpuacct", "nomad", a+".runner", "cpuacct.usage"), "450000000\n")
	return fs, a, b
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSnapshot(t *testing.T) {
	fs, a, b := fakeHost(t)
	s, err := fs.Snapshot("runner", true)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Runners) != 2 || s.Runners[a] == nil || s.Runners[b] == nil {
		t.Fatalf("runners %v, want exactly %s and %s", keys(s.Runners), a, b)
	}
	roles := func(r *Runner) string {
		var out []string
		for _, p := range r.Processes {
			out = append(out, strconv.Itoa(p.PID)+"="+p.Role)
		}
		return strings.Join(out, " ")
	}
	if got := roles(s.Runners[a]); got != "110=logmon 111=executor 112=parent 113=child" {
		t.Errorf("runner A: %s", got)
	}
	if got := roles(s.Runners[b]); got != "121=executor 122=parent 123=child" {
		t.Errorf("runner B: %s", got)
	}
	if s.Runners[b].Has(RoleLogmon) || !s.Runners[a].Has(RoleLogmon) {
		t.Error("only runner A has a logmon")
	}
	if got := s.Runners[a].MemoryOf(""); got.PssKB != 58000 || got.RssKB != 3*58000 {
		t.Errorf("runner A memory %+v, want Pss 58000 kB", got)
	}
	if got := s.Runners[b].MemoryOf(RoleChild).PssKB; got != 10000 {
		t.Errorf("runner B child Pss %d, want 10000", got)
	}
	// CPU: A's task from its cgroup, B's (cgroup unreadable) from its live processes.
	if r := s.Runners[a]; r.TaskCPU != 450*time.Millisecond || !r.TaskCPUFromCgroup {
		t.Errorf("runner A task CPU %v (cgroup %v), want 450ms from the cgroup", r.TaskCPU, r.TaskCPUFromCgroup)
	}
	if r := s.Runners[b]; r.TaskCPU != 370*time.Millisecond || r.TaskCPUFromCgroup {
		t.Errorf("runner B task CPU %v (cgroup %v), want 370ms from its processes", r.TaskCPU, r.TaskCPUFromCgroup)
	}
	if got := s.Runners[a].CPUOf(RoleExecutor); got != 40*time.Millisecond {
		t.Errorf("runner A executor CPU %v, want 40ms", got)
	}
	if s.Agent == nil || s.Agent.PID != 100 || s.Agent.CPU() != 5400*time.Millisecond {
		t.Fatalf("agent %+v, want pid 100 with 5.4 s", s.Agent)
	}
	// Every nomad process the agent started, the gateway's executor included.
	if len(s.AgentChildren) != 4 || s.AgentChildren[400] != 90*time.Millisecond {
		t.Errorf("agent children %v, want pids 110 111 121 400", s.AgentChildren)
	}
}

func TestSnapshotWithoutMemoryReadsNoSmaps(t *testing.T) {
	fs, a, _ := fakeHost(t)
	os.Remove(filepath.Join(fs.Proc, "112", "smaps_rollup"))
	if _, err := fs.Snapshot("runner", false); err != nil {
		t.Fatalf("without memory: %v", err)
	}
	s, err := fs.Snapshot("runner", true)
	if err != nil {
		t.Fatalf("with memory, a process gone meanwhile: %v", err)
	}
	if got := s.Runners[a].MemoryOf(RoleParent).PssKB; got != 0 {
		t.Errorf("a process without smaps_rollup counts %d kB, want 0", got)
	}
	write(t, filepath.Join(fs.Proc, "113", "smaps_rollup"), "garbage\n")
	if _, err := fs.Snapshot("runner", true); err == nil {
		t.Error("an unreadable smaps_rollup is not an error")
	}
}

func TestSnapshotAgentWithoutRunners(t *testing.T) {
	root := t.TempDir()
	fs := FS{Proc: filepath.Join(root, "proc"), Cgroup: root}
	write(t, filepath.Join(fs.Proc, "100", "stat"), statLine(100, "nomad", 1, 5, 5, 0, 0, 1)+"\n")
	write(t, filepath.Join(fs.Proc, "100", "cmdline"), "nomad\x00agent\x00-dev\x00")
	s, err := fs.Snapshot("runner", true)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Runners) != 0 || s.Agent == nil || s.Agent.PID != 100 {
		t.Fatalf("runners %d, agent %+v; want none and pid 100", len(s.Runners), s.Agent)
	}
	// A second agent makes the choice ambiguous without runners.
	write(t, filepath.Join(fs.Proc, "200", "stat"), statLine(200, "nomad", 1, 5, 5, 0, 0, 1)+"\n")
	write(t, filepath.Join(fs.Proc, "200", "cmdline"), "nomad\x00agent\x00-dev\x00")
	if s, _ := fs.Snapshot("runner", false); s.Agent != nil {
		t.Fatalf("agent %+v with two agents and no runner, want none", s.Agent)
	}
}

func keys(m map[string]*Runner) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
