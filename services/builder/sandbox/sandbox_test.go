package sandbox

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fnhook/fnhook/services/builder/egress"
)

func TestMain(m *testing.M) {
	Main()
	os.Exit(m.Run())
}

// buildUser is the account the sandbox tests run programs as (scripts/install.sh makes it).
const buildUser = "fnhook-build"

// newSandbox returns a sandbox, or fails when the test does not run as root: only root
// can build one, and make test (CI) runs as root, where these tests must never be skipped.
func newSandbox(t *testing.T, lim Limits, mask ...string) *Sandbox {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the sandbox needs root: run the tests as root, as make test does")
	}
	s, err := New(Config{User: buildUser, Limits: lim, Mask: mask})
	if err != nil {
		t.Fatal(err)
	}
	if m := s.Missing(); len(m) > 0 {
		t.Fatalf("running as root, yet limits are missing: %v", m)
	}
	return s
}

// workspace makes a folder with a tmpfs mounted over it, removed when the test ends.
func workspace(t *testing.T, s *Sandbox) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ws")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := s.MountWorkspace(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := UnmountWorkspace(dir); err != nil {
			t.Error(err)
		}
	})
	return dir
}

var runs int

// run runs a shell script in the sandbox and returns its output.
func run(t *testing.T, s *Sandbox, ctx context.Context, c Cmd, script string) (Result, string, error) {
	t.Helper()
	runs++
	var out bytes.Buffer
	c.Name = fmt.Sprintf("test-%d-%d", os.Getpid(), runs)
	c.Path, c.Args = "/bin/sh", []string{"-c", script}
	c.Stdout, c.Stderr = &out, &out
	if c.Dir == "" {
		c.Dir = "/"
	}
	c.Env = append(c.Env, "PATH=/usr/local/bin:/usr/bin:/bin")
	res, err := s.Run(ctx, &c)
	return res, out.String(), err
}

func TestRunAsTheBuildUserWithoutPrivileges(t *testing.T) {
	s := newSandbox(t, Limits{})
	res, out, err := run(t, s, context.Background(), Cmd{},
		`id -u; id -g; id -G; grep NoNewPrivs /proc/self/status; hostname`)
	if err != nil || !res.Success() {
		t.Fatalf("run: %+v %v\n%s", res, err, out)
	}
	id := strconv.Itoa(s.UID())
	gid := strconv.Itoa(s.GID())
	want := strings.Join([]string{id, gid, gid, "NoNewPrivs:\t1", "fnhook-build"}, "\n") + "\n"
	if out != want {
		t.Fatalf("printed\n%s\nwant\n%s", out, want)
	}
}

func TestExitStatusIsRelayed(t *testing.T) {
	s := newSandbox(t, Limits{})
	res, out, err := run(t, s, context.Background(), Cmd{}, `echo to-stderr >&2; exit 7`)
	if err != nil || res.ExitCode != 7 || res.Signal != 0 || out != "to-stderr\n" {
		t.Fatalf("got %+v %v %q; want exit 7 and the output", res, err, out)
	}
	res, _, err = run(t, s, context.Background(), Cmd{}, `kill -TERM $$`)
	if err != nil || res.Signal != syscall.SIGTERM || res.ExitCode != -1 {
		t.Fatalf("got %+v %v; want killed by SIGTERM", res, err)
	}
}

// TestNetworkOnlyThroughTheProxy: host loopback ports are unreachable; the proxy, and
// through it only an allowed server, is reachable.
func TestNetworkOnlyThroughTheProxy(t *testing.T) {
	s := newSandbox(t, Limits{})
	allowed := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "allowed-body")
	}))
	defer allowed.Close()
	hostOnly, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hostOnly.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := hostOnly.Accept(); err == nil {
			accepted <- struct{}{}
			c.Close()
		}
	}()
	p, err := egress.New(egress.Config{Allow: []string{allowed.URL}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sockDir := t.TempDir() // 0700 root: the helper opens it before it is covered
	sock := filepath.Join(sockDir, "proxy.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Serve(ctx, ln, slog.New(slog.NewTextHandler(io.Discard, nil)))

	script := fmt.Sprintf(`
node -e '
const net = require("net"), http = require("http");
const tryConnect = (host, port) => new Promise(res => {
  const s = net.connect({host, port, timeout: 2000});
  s.on("connect", () => { s.destroy(); res("connected"); });
  s.on("timeout", () => { s.destroy(); res("timeout"); });
  s.on("error", e => res(e.code));
});
const proxy = new URL(process.env.HTTP_PROXY);
const get = url => new Promise(res => {
  http.get({host: proxy.hostname, port: proxy.port, path: url, headers: {host: new URL(url).host}}, r => {
    let b = ""; r.on("data", d => b += d); r.on("end", () => res(r.statusCode + " " + b.trim()));
  }).on("error", e => res(e.code));
});
(async () => {
  console.log("host-port", await tryConnect("127.0.0.1", %d));
  console.log("bridge", await tryConnect("172.26.64.1", 4646));
  console.log("allowed", await get(%q));
  console.log("denied", (await get("http://127.0.0.1:%d/")).split(" ")[0]);
})();
'`, hostOnly.Addr().(*net.TCPAddr).Port, allowed.URL+"/x", hostOnly.Addr().(*net.TCPAddr).Port)
	res, out, err := run(t, s, context.Background(), Cmd{Proxy: sock, ProxyEnv: []string{"HTTP_PROXY"}}, script)
	if err != nil || !res.Success() {
		t.Fatalf("run: %+v %v\n%s", res, err, out)
	}
	lines := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(l, " ")
		lines[k] = v
	}
	if lines["host-port"] != "ECONNREFUSED" {
		t.Errorf("connect to a host loopback port: %q, want ECONNREFUSED (nothing listens on the sandbox's own loopback)", lines["host-port"])
	}
	if v := lines["bridge"]; v != "ENETUNREACH" {
		t.Errorf("connect to the Nomad bridge: %q, want ENETUNREACH", v)
	}
	if lines["allowed"] != "200 allowed-body" {
		t.Errorf("GET through the proxy: %q, want 200 allowed-body", lines["allowed"])
	}
	if lines["denied"] != "403" {
		t.Errorf("GET of a host port through the proxy: %q, want 403", lines["denied"])
	}
	select {
	case <-accepted:
		t.Error("the host-only listener accepted a connection from the sandbox")
	default:
	}
}

func TestFileSystemView(t *testing.T) {
	masked := t.TempDir() // e.g. the builder's work folder
	if err := os.WriteFile(filepath.Join(masked, "other-build"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newSandbox(t, Limits{DiskBytes: 8 << 20}, masked)
	ws := workspace(t, s)
	hostTmp, err := os.CreateTemp("", "visible-on-host-")
	if err != nil {
		t.Fatal(err)
	}
	hostTmp.Close()
	defer os.Remove(hostTmp.Name())
	if err := os.Chmod(hostTmp.Name(), 0o644); err != nil {
		t.Fatal(err)
	}
	exposed := filepath.Join(masked, "exposed.pem")
	if err := os.WriteFile(exposed, []byte("CERT"), 0o644); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`
set -u
cd %[1]s && echo hello > a && cat a
test -e %[2]s && echo host-tmp-visible
test -e %[3]s/other-build && echo other-build-visible
cat %[4]s; echo
(echo x > %[4]s) 2>/dev/null && echo exposed-writable
echo scratch > /tmp/s && cat /tmp/s
ls /run | wc -l
dd if=/dev/zero of=%[1]s/big bs=1M count=16 2>&1 | grep -o 'No space left on device' | head -1
ls /proc | grep -c '^[0-9]'
`, ws, hostTmp.Name(), masked, exposed)
	res, out, err := run(t, s, context.Background(), Cmd{Workspace: ws, Expose: []string{exposed}}, script)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	want := "hello\nCERT\nscratch\n0\nNo space left on device\n"
	if !strings.HasPrefix(out, want) {
		t.Fatalf("run %+v printed\n%s\nwant it to start with\n%s", res, out, want)
	}
	// Only the sandbox's own processes: sh, ls and grep at most, plus the helper.
	if n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(out, want))); n < 2 || n > 5 {
		t.Errorf("/proc inside lists %d processes, want only the sandbox's own", n)
	}
	// The workspace is the host's: what the run wrote is there.
	if b, err := os.ReadFile(filepath.Join(ws, "a")); err != nil || string(b) != "hello\n" {
		t.Errorf("workspace file on the host: %q %v", b, err)
	}
	if _, err := os.Stat("/tmp/s"); err == nil {
		t.Error("the run's /tmp file reached the host's /tmp")
	}
}

func TestMemoryLimitKills(t *testing.T) {
	s := newSandbox(t, Limits{MemoryBytes: 64 << 20})
	res, out, err := run(t, s, context.Background(), Cmd{},
		`node -e 'const a = []; for (;;) a.push(Buffer.alloc(1 << 20, 1))'`)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	if res.Success() || !res.OOMKilled {
		t.Fatalf("result %+v, want OOM-killed\n%s", res, out)
	}
	if res.PeakMemory <= 0 || res.PeakMemory > 64<<20 {
		t.Errorf("peak memory %d, want within the 64 MiB limit", res.PeakMemory)
	}
}

func TestPidsLimitStopsForks(t *testing.T) {
	s := newSandbox(t, Limits{Pids: 16})
	res, out, err := run(t, s, context.Background(), Cmd{},
		`n=0; for i in $(seq 40); do sleep 30 & n=$((n+1)); done 2>/dev/null; echo started; exit 0`)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	if !res.PidsLimited {
		t.Fatalf("result %+v, want the pids limit hit\n%s", res, out)
	}
}

// TestLeftoversAreKilled: a daemon an install script detaches does not outlive the run.
func TestLeftoversAreKilled(t *testing.T) {
	s := newSandbox(t, Limits{Pids: 64, MemoryBytes: 256 << 20})
	marker := strconv.Itoa(3000 + os.Getpid()%1000)
	res, out, err := run(t, s, context.Background(), Cmd{},
		`setsid sleep `+marker+` </dev/null >/dev/null 2>&1 & echo started`)
	if err != nil || !res.Success() {
		t.Fatalf("run: %+v %v\n%s", res, err, out)
	}
	if pids := findProcs("sleep\x00" + marker + "\x00"); len(pids) > 0 {
		t.Fatalf("the detached sleep still runs as %v", pids)
	}
}

func TestTimeoutKillsTheRun(t *testing.T) {
	s := newSandbox(t, Limits{})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	marker := strconv.Itoa(4000 + os.Getpid()%1000)
	start := time.Now()
	_, out, err := run(t, s, ctx, Cmd{}, `sleep `+marker+` & sleep `+marker)
	if err == nil || ctx.Err() == nil {
		t.Fatalf("run ended with %v before the deadline\n%s", err, out)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("run took %s after a 500ms limit", took)
	}
	deadline := time.Now().Add(2 * time.Second)
	for len(findProcs("sleep\x00"+marker+"\x00")) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("processes of the run outlived its deadline")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCheck(t *testing.T) {
	s := newSandbox(t, Limits{MemoryBytes: 128 << 20, Pids: 32})
	if err := s.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestLookupUserRefusesSharedAccounts(t *testing.T) {
	for _, name := range []string{"nobody", "root", ""} {
		if _, _, err := LookupUser(name); err == nil {
			t.Errorf("LookupUser(%q) accepted it", name)
		}
	}
	if _, _, err := LookupUser("no-such-user-fnhook"); err == nil || !strings.Contains(err.Error(), "useradd") {
		t.Errorf("LookupUser of a missing user: %v, want a hint to create it", err)
	}
}

func TestSweepRemovesOldCgroups(t *testing.T) {
	s := newSandbox(t, Limits{Pids: 16})
	dir := filepath.Join(s.cg.pids, "test-sweep-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	defer syscall.Rmdir(dir)
	if n := s.Sweep(time.Hour); n != 0 {
		t.Errorf("Sweep(1h) removed %d fresh cgroups", n)
	}
	// Made old rather than swept with a tiny age, which would take the cgroups of runs
	// starting elsewhere on this machine.
	long := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(dir, long, long); err != nil {
		t.Fatal(err)
	}
	if n := s.Sweep(time.Hour); n < 1 {
		t.Errorf("Sweep(1h) removed %d cgroups, want the 2h-old one", n)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Error("old cgroup still there")
	}
}

// findProcs returns the host pids whose command line contains cmdline.
func findProcs(cmdline string) []int {
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
