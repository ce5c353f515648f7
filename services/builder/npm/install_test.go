package npm

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fnhook/fnhook/services/builder/sandbox"
)

func TestMain(m *testing.M) {
	sandbox.Main()
	os.Exit(m.Run())
}

// fakeNPM writes an executable "npm" script into a folder the sandbox user can read and
// returns its path. The folder is in /tmp, which the sandbox hides: the Installer keeps
// npm's own folder visible.
func fakeNPM(t *testing.T, script string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "fake-npm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "npm")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// envDumper is a fake npm that writes its environment and user id where the real one would
// put node_modules.
const envDumper = `while [ $# -gt 0 ]; do case "$1" in --prefix) p="$2"; shift;; esac; shift; done
mkdir -p "$p/node_modules/dump"
env > "$p/node_modules/dump/env.txt"
id -u > "$p/node_modules/dump/uid.txt"
`

func TestInstallEnvironmentIsBuiltFromNothing(t *testing.T) {
	// The builder's own secrets are in its environment; none may reach npm.
	t.Setenv("FNHOOK_ADMIN_KEY", "admin-key-that-must-not-leak")
	t.Setenv("FNHOOK_AWS_SECRET_ACCESS_KEY", "s3-secret-that-must-not-leak")
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDNOTFORNPM")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-that-must-not-leak")
	t.Setenv("npm_config_registry", "http://evil.invalid/")

	in, err := New(Config{NPM: fakeNPM(t, envDumper), Registry: "https://registry.example.test/",
		CAFile: "/etc/ssl/certs/extra.pem", Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ws, err := in.Install(context.Background(), "dayjs", "1.11.13")
	if err != nil {
		t.Fatalf("Install: %v", err)
	}
	t.Cleanup(func() { ws.Cleanup() })
	raw, err := os.ReadFile(filepath.Join(ws.Prefix, "node_modules", "dump", "env.txt"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		k, v, _ := strings.Cut(line, "=")
		got[k] = v
	}
	want := map[string]string{
		"HOME":                filepath.Join(ws.Dir, "home"),
		"TMPDIR":              filepath.Join(ws.Dir, "tmp"),
		"npm_config_cache":    filepath.Join(ws.Dir, "cache"),
		"npm_config_registry": "https://registry.example.test/",
		"NODE_EXTRA_CA_CERTS": "/etc/ssl/certs/extra.pem",
	}
	if in.nodeDir != "" {
		want["npm_config_nodedir"] = in.nodeDir
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("npm's %s = %q, want %q", k, got[k], v)
		}
	}
	// In the sandbox npm's only way out is the proxy on the sandbox's own loopback.
	for _, k := range proxyEnv {
		if in.Sandboxed() {
			if !regexp.MustCompile(`^http://127\.0\.0\.1:\d+$`).MatchString(got[k]) {
				t.Errorf("npm's %s = %q, want the sandbox's proxy", k, got[k])
			}
			want[k] = got[k]
		}
	}
	if !strings.Contains(got["PATH"], "/usr/bin") {
		t.Errorf("npm's PATH = %q, want the system folders", got["PATH"])
	}
	// The shell adds PWD (and SHLVL/_ in some shells) itself; nothing else may be there.
	shell := map[string]bool{"PWD": true, "OLDPWD": true, "SHLVL": true, "_": true}
	for k := range got {
		if _, ok := want[k]; !ok && k != "PATH" && !shell[k] {
			t.Errorf("npm got an unexpected variable %s", k)
		}
		if strings.HasPrefix(k, "FNHOOK_") || strings.HasPrefix(k, "AWS_") {
			t.Errorf("npm got the builder's variable %s", k)
		}
	}
	for _, secret := range []string{"admin-key", "s3-secret", "AKIDNOTFORNPM", "aws-secret", "evil.invalid"} {
		if strings.Contains(string(raw), secret) {
			t.Errorf("npm's environment holds %q", secret)
		}
	}

	uid, err := os.ReadFile(filepath.Join(ws.Prefix, "node_modules", "dump", "uid.txt"))
	if err != nil {
		t.Fatal(err)
	}
	wantUID := strconv.Itoa(os.Geteuid())
	if os.Geteuid() == 0 {
		build, err := user.Lookup(DefaultUser)
		if err != nil {
			t.Fatal(err)
		}
		wantUID = build.Uid
		if !in.Sandboxed() {
			t.Error("running as root but not sandboxed")
		}
	}
	if strings.TrimSpace(string(uid)) != wantUID {
		t.Errorf("npm ran as uid %s, want %s", strings.TrimSpace(string(uid)), wantUID)
	}
}

func TestEnv(t *testing.T) {
	tests := []struct {
		name   string
		caFile string
		want   []string
	}{
		{"without CA file", "", []string{"PATH", "HOME", "TMPDIR", "npm_config_cache", "npm_config_registry"}},
		{"with CA file", "/ca.pem", []string{"PATH", "HOME", "TMPDIR", "npm_config_cache", "npm_config_registry", "NODE_EXTRA_CA_CERTS"}},
	}
	t.Setenv("FNHOOK_ADMIN_KEY", "x")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "y")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := &Installer{registry: DefaultRegistry, caFile: tt.caFile, path: "/usr/bin:/bin"}
			env := in.Env("/w")
			var keys []string
			for _, kv := range env {
				k, _, _ := strings.Cut(kv, "=")
				keys = append(keys, k)
			}
			if strings.Join(keys, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("Env keys = %v, want %v", keys, tt.want)
			}
		})
	}
}

func TestInstallTimeoutKillsEverything(t *testing.T) {
	// The fake npm starts a grandchild (detached from its process group), then hangs.
	marker := strconv.Itoa(6000 + os.Getpid()%1000)
	script := `setsid sleep ` + marker + ` </dev/null >/dev/null 2>&1 &
sleep ` + marker + `
`
	in, err := New(Config{NPM: fakeNPM(t, script), Timeout: 700 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = in.Install(context.Background(), "slow", "1.0.0")
	var f *Failure
	if !errors.As(err, &f) {
		t.Fatalf("Install error = %v, want a *Failure", err)
	}
	if f.Transient || f.Reason != "timeout" || !strings.Contains(f.Message, "did not finish within") {
		t.Fatalf("failure = %+v, want a permanent timeout", f)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Install took %s after a 700ms limit", took)
	}
	if !in.Sandboxed() {
		return // without the sandbox only npm's own process group is killed
	}
	deadline := time.Now().Add(3 * time.Second)
	for len(procsWith("sleep\x00"+marker+"\x00")) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("a process of the install still runs after the time limit: %v", procsWith("sleep\x00"+marker+"\x00"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// procsWith returns the pids whose command line holds cmdline (NUL-separated arguments),
// ignoring zombies.
func procsWith(cmdline string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && bytes.Contains(append(b, 0), []byte(cmdline)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func TestInstallScriptFailureIsPermanent(t *testing.T) {
	script := `while [ $# -gt 0 ]; do case "$1" in --prefix) p="$2"; shift;; esac; shift; done
echo "npm error code 3" >&2
echo "npm error path $p/node_modules/badpkg" >&2
echo "npm error oops something broke" >&2
exit 3
`
	in, err := New(Config{NPM: fakeNPM(t, script), Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	_, err = in.Install(context.Background(), "badpkg", "1.0.0")
	var f *Failure
	if !errors.As(err, &f) {
		t.Fatalf("Install error = %v, want a *Failure", err)
	}
	want := "npm error code 3\nnpm error path node_modules/badpkg\nnpm error oops something broke"
	if f.Transient || f.Message != want {
		t.Fatalf("failure = %+v, want permanent with message %q", f, want)
	}
	if strings.Contains(f.Message, os.TempDir()+"/fnhook-build-") {
		t.Fatalf("message leaks the temporary path: %q", f.Message)
	}
}

func TestArgs(t *testing.T) {
	in := &Installer{retries: 1}
	got := strings.Join(in.Args("/p", "@scope/pkg", "1.2.3"), " ")
	want := "install --no-audit --no-fund --omit=dev --no-package-lock --ignore-scripts=false --no-update-notifier " +
		"--prefix /p --fetch-retries=1 --fetch-retry-mintimeout=1000 --fetch-retry-maxtimeout=10000 @scope/pkg@1.2.3"
	if got != want {
		t.Fatalf("Args =\n%s\nwant\n%s", got, want)
	}
}

func TestSweep(t *testing.T) {
	work := t.TempDir()
	in := &Installer{workDir: work}
	old := filepath.Join(work, "fnhook-build-old")
	fresh := filepath.Join(work, "fnhook-build-fresh")
	other := filepath.Join(work, "someone-elses")
	for _, d := range []string{old, fresh, other} {
		if err := os.MkdirAll(filepath.Join(d, "prefix"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	long := time.Now().Add(-time.Hour)
	for _, d := range []string{old, other} {
		if err := os.Chtimes(d, long, long); err != nil {
			t.Fatal(err)
		}
	}
	n, err := in.Sweep(10 * time.Minute)
	if err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v; want 1 folder removed", n, err)
	}
	for d, want := range map[string]bool{old: false, fresh: true, other: true} {
		if _, err := os.Stat(d); (err == nil) != want {
			t.Errorf("%s exists = %v, want %v", d, err == nil, want)
		}
	}
}

// TestLimitsFailPermanently: a module that hits a sandbox limit fails for good, saying
// which limit and how large it is.
func TestLimitsFailPermanently(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the sandbox's limits need root: run the tests as root, as make test does")
	}
	prefix := `while [ $# -gt 0 ]; do case "$1" in --prefix) p="$2"; shift;; esac; shift; done
`
	tests := []struct {
		name, script, reason, message string
	}{
		{"memory", `node -e 'const a = []; for (;;) a.push(Buffer.alloc(1 << 20, 1))'`,
			"memory", "npm install ran out of memory: the builder allows 96 MiB"},
		{"disk", `dd if=/dev/zero of="$p/big" bs=1M count=64 || { echo "npm error code ENOSPC" >&2; exit 1; }`,
			"disk", "npm install ran out of disk space: the builder allows 16 MiB"},
		{"pids", `for i in $(seq 100); do sleep 30 & done 2>/dev/null; wait`,
			"pids", "npm install started too many processes: the builder allows 24"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, err := New(Config{NPM: fakeNPM(t, prefix+tt.script), Timeout: 20 * time.Second,
				Limits: sandbox.Limits{MemoryBytes: 96 << 20, Pids: 24, DiskBytes: 16 << 20}})
			if err != nil {
				t.Fatal(err)
			}
			_, err = in.Install(context.Background(), "hog", "1.0.0")
			var f *Failure
			if !errors.As(err, &f) {
				t.Fatalf("Install error = %v, want a *Failure", err)
			}
			if f.Transient || f.Reason != tt.reason || !strings.HasPrefix(f.Message, tt.message) {
				t.Fatalf("failure = %+v, want permanent %q starting %q", f, tt.reason, tt.message)
			}
		})
	}
}

func TestSweepUnmountsLeftovers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("mounting needs root: run the tests as root, as make test does")
	}
	work := t.TempDir()
	in, err := New(Config{NPM: fakeNPM(t, "exit 0"), WorkDir: work, Limits: sandbox.Limits{DiskBytes: 4 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	// What a builder killed in the middle of a build leaves: a mounted workspace, in its
	// own work folder or (under Nomad, a previous allocation's) in another one.
	other, err := New(Config{NPM: fakeNPM(t, "exit 0"), WorkDir: t.TempDir(), Limits: sandbox.Limits{DiskBytes: 4 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	var old []*Workspace
	for _, i := range []*Installer{in, other} {
		ws, err := i.prepare()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ws.Cleanup() })
		if !mounted(ws.Dir) {
			t.Fatalf("%s is not a mount point after prepare", ws.Dir)
		}
		long := time.Now().Add(-time.Hour)
		if err := os.Chtimes(ws.Dir, long, long); err != nil {
			t.Fatal(err)
		}
		old = append(old, ws)
	}
	// A build in progress is left alone.
	fresh, err := in.prepare()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fresh.Cleanup() })
	n, err := in.Sweep(10 * time.Minute)
	if err != nil || n < 2 {
		t.Fatalf("Sweep = %d, %v; want both old workspaces removed", n, err)
	}
	for _, ws := range old {
		if mounted(ws.Dir) {
			t.Errorf("%s is still mounted after Sweep", ws.Dir)
		}
		if _, err := os.Stat(ws.Dir); err == nil {
			t.Errorf("%s still exists after Sweep", ws.Dir)
		}
	}
	if !mounted(fresh.Dir) {
		t.Errorf("Sweep unmounted the workspace of a build in progress")
	}
}

func mounted(dir string) bool {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// TestLongWorkDir: under Nomad the work folder is deep in the allocation folder, longer than
// a unix socket path may be; the proxy's socket must still work.
func TestLongWorkDir(t *testing.T) {
	work := filepath.Join(t.TempDir(), strings.Repeat("alloc-", 12), "builder", "tmp")
	if err := os.MkdirAll(work, 0o700); err != nil {
		t.Fatal(err)
	}
	if len(work) < 108 {
		t.Fatalf("work folder %s is too short for this test", work)
	}
	// The fake npm fetches through the proxy it was given, as npm would.
	script := `while [ $# -gt 0 ]; do case "$1" in --prefix) p="$2"; shift;; esac; shift; done
mkdir -p "$p/node_modules/ok"
[ -z "$npm_config_proxy" ] || node -e '
const p = new URL(process.env.npm_config_proxy);
require("http").get({host: p.hostname, port: p.port, path: "http://127.0.0.1:9/"}, r => process.exit(r.statusCode === 403 ? 0 : 1))
  .on("error", e => { console.error(e); process.exit(2); });'
`
	in, err := New(Config{NPM: fakeNPM(t, script), WorkDir: work, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ws, err := in.Install(context.Background(), "ok", "1.0.0")
	if err != nil {
		t.Fatalf("Install in %s: %v", work, err)
	}
	ws.Cleanup()
}
