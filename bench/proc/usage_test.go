package proc

import (
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// status is the tail of a /proc/<pid>/task/<tid>/status of the gateway.
const status = `Name:	gateway
State:	S (sleeping)
Threads:	9
Cpus_allowed_list:	0-1
voluntary_ctxt_switches:	81234
nonvoluntary_ctxt_switches:	517
`

func TestParseCtxtSwitches(t *testing.T) {
	tests := []struct {
		name          string
		text          string
		vol, involunt int64
		wantErr       bool
	}{
		{"real", status, 81234, 517, false},
		{"only voluntary", "voluntary_ctxt_switches: 3\n", 0, 0, true},
		{"only nonvoluntary", "nonvoluntary_ctxt_switches: 3\n", 0, 0, true},
		{"not a number", "voluntary_ctxt_switches: x\nnonvoluntary_ctxt_switches: 3\n", 0, 0, true},
		{"empty", "", 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, n, err := ParseCtxtSwitches(strings.NewReader(tt.text))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, want error %v", err, tt.wantErr)
			}
			if v != tt.vol || n != tt.involunt {
				t.Fatalf("got %d, %d; want %d, %d", v, n, tt.vol, tt.involunt)
			}
		})
	}
}

func TestUsageArithmetic(t *testing.T) {
	a := Usage{CPU: 30 * time.Millisecond, Voluntary: 100, Involuntary: 7}
	b := Usage{CPU: 10 * time.Millisecond, Voluntary: 40, Involuntary: 2}
	if got, want := a.Sub(b), (Usage{CPU: 20 * time.Millisecond, Voluntary: 60, Involuntary: 5}); got != want {
		t.Errorf("Sub = %+v, want %+v", got, want)
	}
	if got, want := a.Add(b), (Usage{CPU: 40 * time.Millisecond, Voluntary: 140, Involuntary: 9}); got != want {
		t.Errorf("Add = %+v, want %+v", got, want)
	}
	if got := a.Switches(); got != 107 {
		t.Errorf("Switches = %d, want 107", got)
	}
}

// usageHost is a /proc with a gateway of two threads and a node process of one.
func usageHost(t *testing.T) FS {
	t.Helper()
	fs := FS{Proc: filepath.Join(t.TempDir(), "proc")}
	proc := func(pid int, cmdline string, utime, stime, cutime int64, threads map[int][2]int64) {
		dir := filepath.Join(fs.Proc, strconv.Itoa(pid))
		write(t, filepath.Join(dir, "stat"), statLine(pid, "x", 1, utime, stime, cutime, 0, 1)+"\n")
		write(t, filepath.Join(dir, "cmdline"), cmdline)
		for tid, sw := range threads {
			write(t, filepath.Join(dir, "task", strconv.Itoa(tid), "status"),
				"Name:\tx\nvoluntary_ctxt_switches:\t"+strconv.FormatInt(sw[0], 10)+"\nnonvoluntary_ctxt_switches:\t"+strconv.FormatInt(sw[1], 10)+"\n")
		}
	}
	proc(300, "/work/main/bin/gateway\x00", 120, 30, 500, map[int][2]int64{300: {10, 1}, 301: {200, 4}})
	proc(400, "/usr/bin/node\x00/runner/main.js\x00", 5, 5, 0, map[int][2]int64{400: {7, 0}})
	proc(500, "/usr/local/bin/gateway-not\x00", 1, 1, 0, map[int][2]int64{500: {1, 1}})
	write(t, filepath.Join(fs.Proc, "self"), "")
	return fs
}

func TestUsage(t *testing.T) {
	fs := usageHost(t)
	u, err := fs.Usage(300)
	if err != nil {
		t.Fatal(err)
	}
	// utime + stime (150 ticks), not the reaped children's 500; switches of both threads.
	if want := (Usage{CPU: 1500 * time.Millisecond, Voluntary: 210, Involuntary: 5}); u != want {
		t.Fatalf("Usage(300) = %+v, want %+v", u, want)
	}
	sum, err := fs.UsageOf([]int{300, 400})
	if err != nil {
		t.Fatal(err)
	}
	if want := (Usage{CPU: 1600 * time.Millisecond, Voluntary: 217, Involuntary: 5}); sum != want {
		t.Fatalf("UsageOf = %+v, want %+v", sum, want)
	}
	if _, err := fs.UsageOf([]int{300, 999}); err == nil {
		t.Fatal("want an error for a pid that does not exist")
	}
}

func TestFindByExe(t *testing.T) {
	fs := usageHost(t)
	got, err := fs.FindByExe("/bin/gateway")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []int{300}) {
		t.Fatalf("FindByExe = %v, want [300]", got)
	}
}
