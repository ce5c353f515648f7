package sandbox

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeTree lays out files the way a cgroup hierarchy shows them, enough for create and
// events to be checked without root (the kernel's side is checked by sandbox_test.go).
func fakeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, body := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestCgroupLayouts(t *testing.T) {
	lim := Limits{MemoryBytes: 256 << 20, Pids: 100}
	tests := []struct {
		name   string
		tree   map[string]string
		run    string            // the run's cgroup, relative to the root
		limits map[string]string // file (relative to the root) -> value written
		events map[string]string // file (relative to the run's cgroup on each hierarchy) -> content
	}{
		{
			name: "v2",
			tree: map[string]string{
				"cgroup.controllers":                  "cpu memory pids",
				"cgroup.subtree_control":              "memory pids",
				"fnhook-build/cgroup.subtree_control": "memory pids",
			},
			run: "fnhook-build/r1",
			limits: map[string]string{
				"fnhook-build/r1/memory.max":      "268435456",
				"fnhook-build/r1/memory.swap.max": "0",
				"fnhook-build/r1/pids.max":        "100",
			},
			events: map[string]string{
				"fnhook-build/r1/memory.events": "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n",
				"fnhook-build/r1/pids.events":   "max 3\n",
			},
		},
		{
			name: "v1",
			tree: map[string]string{
				"memory/cgroup.procs": "",
				"pids/cgroup.procs":   "",
			},
			run: "memory/fnhook-build/r1",
			limits: map[string]string{
				"memory/fnhook-build/r1/memory.limit_in_bytes": "268435456",
				"pids/fnhook-build/r1/pids.max":                "100",
			},
			events: map[string]string{
				"memory/fnhook-build/r1/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
				"pids/fnhook-build/r1/pids.events":          "max 1\n",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := fakeTree(t, tt.tree)
			cgs, err := setupCgroups(root, lim)
			if err != nil {
				t.Fatal(err)
			}
			g, err := cgs.create("r1", lim)
			if err != nil {
				t.Fatal(err)
			}
			for f, want := range tt.limits {
				b, err := os.ReadFile(filepath.Join(root, f))
				if err != nil || string(b) != want {
					t.Errorf("%s = %q (%v), want %q", f, b, err, want)
				}
			}
			for _, f := range g.procFiles() {
				if !strings.HasPrefix(f, root) || filepath.Base(f) != "cgroup.procs" || filepath.Base(filepath.Dir(f)) != "r1" {
					t.Errorf("join file %s is not a cgroup.procs of the run", f)
				}
			}
			if n := len(g.procFiles()); (tt.name == "v2") != (n == 1) {
				t.Errorf("%d cgroups to join", n)
			}
			for f, body := range tt.events {
				if err := os.WriteFile(filepath.Join(root, f), []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if oom, pids := g.events(); oom == 0 || pids == 0 {
				t.Errorf("events = %d OOM kills, %d fork failures; want both seen", oom, pids)
			}
		})
	}
}

func TestNoLimitsNoCgroups(t *testing.T) {
	cgs, err := setupCgroups(t.TempDir(), Limits{DiskBytes: 1 << 20})
	if err != nil || cgs != nil {
		t.Fatalf("setupCgroups without memory or pids limits = %v, %v; want none", cgs, err)
	}
	g, err := cgs.create("r1", Limits{})
	if err != nil || g != nil || g.procFiles() != nil || g.remove() != nil {
		t.Fatal("a nil hierarchy must make nil, harmless cgroups")
	}
}

func TestUnescapeMountPath(t *testing.T) {
	for in, want := range map[string]string{
		"/tmp/fnhook-build-1":        "/tmp/fnhook-build-1",
		`/tmp/a\040b/fnhook-build-2`: "/tmp/a b/fnhook-build-2",
		`/tmp/tab\011x`:              "/tmp/tab\tx",
		`/tmp/back\134slash`:         `/tmp/back\slash`,
		`/tmp/not-an-escape\9`:       `/tmp/not-an-escape\9`,
	} {
		if got := unescapeMountPath(in); got != want {
			t.Errorf("unescapeMountPath(%q) = %q, want %q", in, got, want)
		}
	}
}
