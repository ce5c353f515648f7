package main

// Isolation tests: tenant code in a real runner tries to reach what is not its own. Each
// attempt must fail or be contained, and another tenant's calls keep answering meanwhile.

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	fnhook "github.com/fnhook/fnhook/libs"
	"github.com/fnhook/fnhook/libs/handlerapi"
	"github.com/fnhook/fnhook/libs/runnerapi"
)

// probeCode reports what a tenant can see and reach from inside its runner.
const probeCode = `
const fs = require('fs');
const net = require('net');
const cp = require('child_process');
function read(p) {
  try { return { ok: true, data: fs.readFileSync(p, 'latin1').slice(0, 65536) }; } catch (e) { return { ok: false, err: e.code }; }
}
function list(p) { try { return fs.readdirSync(p); } catch (e) { return e.code; } }
function connect(host, port) {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const t = setTimeout(() => { s.destroy(); resolve('timeout'); }, 1500);
    s.on('connect', () => { clearTimeout(t); s.destroy(); resolve('connected'); });
    s.on('error', (e) => { clearTimeout(t); resolve(e.code); });
  });
}
function write(p) { try { fs.writeFileSync(p, 'x'); return 'written'; } catch (e) { return e.code; } }
module.exports = async (ctx) => {
  const c = ctx.configuration;
  const out = { uid: process.getuid(), gid: process.getgid(), env: process.env, root: list('/'), alloc: list('/alloc'),
    local: list('/local'), etc: list('/etc'), bin: list('/bin'), usr: list('/usr'), pids: {}, reads: {}, connect: {}, writes: {} };
  for (const p of fs.readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    out.pids[p] = { cmdline: read('/proc/' + p + '/cmdline'), environ: read('/proc/' + p + '/environ') };
  }
  for (const p of JSON.parse(c.READS)) out.reads[p] = read(p);
  // In parallel: dropped connections wait out their timeout.
  await Promise.all(JSON.parse(c.TARGETS).map(async ([host, port]) => { out.connect[host + ':' + port] = await connect(host, Number(port)); }));
  for (const p of ['/modules/x', '/runner/x', '/etc/x', '/x']) out.writes[p] = write(p);
  const sh = cp.spawnSync('/bin/sh', ['-c', 'id']);
  out.shell = sh.error ? sh.error.code : 'ran: ' + String(sh.stdout);
  return { body: out };
};`

// forkCode spawns node processes in a loop (there is no shell to fork-bomb with).
const forkCode = `
const cp = require('child_process');
module.exports = async () => {
  const out = { spawned: 0, errors: {} };
  const kids = [];
  const count = (e) => { const k = (e && (e.code || e.message)) || 'unknown'; out.errors[k] = (out.errors[k] || 0) + 1; };
  for (let i = 0; i < 300; i++) {
    try {
      const k = cp.spawn(process.execPath, ['-e', 'setInterval(() => {}, 1e6)'], { stdio: 'ignore' });
      k.on('error', count);
      kids.push(k);
      out.spawned++;
    } catch (e) { count(e); }
    if (i % 10 === 9) await new Promise((r) => setTimeout(r, 20));
  }
  await new Promise((r) => setTimeout(r, 1500));
  out.alive = kids.filter((k) => k.exitCode === null && k.signalCode === null && k.pid).length;
  for (const k of kids) { try { k.kill('SIGKILL'); } catch {} }
  return { body: out };
};`

// bufferBombCode allocates outside the V8 heap until something stops it.
const bufferBombCode = `module.exports = async () => { const a = []; for (;;) { a.push(Buffer.alloc(16 << 20, 1)); await null; } };`

// heapBombCode allocates on the V8 heap until something stops it.
const heapBombCode = `module.exports = async () => { const a = []; for (;;) { a.push(new Array(1 << 20).fill(1.5)); } };`

type probeReport struct {
	UID   int               `json:"uid"`
	GID   int               `json:"gid"`
	Env   map[string]string `json:"env"`
	Root  any               `json:"root"`
	Alloc any               `json:"alloc"`
	Local any               `json:"local"`
	Etc   any               `json:"etc"`
	Bin   any               `json:"bin"`
	Usr   any               `json:"usr"`
	Pids  map[string]struct {
		Cmdline readResult `json:"cmdline"`
		Environ readResult `json:"environ"`
	} `json:"pids"`
	Reads   map[string]readResult `json:"reads"`
	Connect map[string]string     `json:"connect"`
	Writes  map[string]string     `json:"writes"`
	Shell   string                `json:"shell"`
}

type readResult struct {
	OK   bool   `json:"ok"`
	Data string `json:"data"`
	Err  string `json:"err"`
}

// bridgeGateway is the address of the nomad bridge on the host (the gateway runners see).
func bridgeGateway(t *testing.T) string {
	t.Helper()
	ifc, err := net.InterfaceByName("nomad")
	if err != nil {
		t.Fatalf("the nomad bridge: %v", err)
	}
	addrs, _ := ifc.Addrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
			return ipn.IP.String()
		}
	}
	t.Fatal("the nomad bridge has no IPv4 address")
	return ""
}

// victimLoop calls the victim's function every 50 ms until stop is closed and counts the
// answers that are not 200 "safe".
func (f *fixture) victimLoop(route fnhook.Route, stop <-chan struct{}) (calls, bad *atomic.Int64, done <-chan struct{}) {
	calls, bad = &atomic.Int64{}, &atomic.Int64{}
	ch := make(chan struct{})
	client := &http.Client{Timeout: 10 * time.Second}
	go func() {
		defer close(ch)
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			req, _ := http.NewRequest(http.MethodGet, runnerapi.RunURL(route.Address, "victim", "", ""), nil)
			runnerapi.Authorize(req, route.Token)
			resp, err := client.Do(req)
			calls.Add(1)
			if err != nil {
				bad.Add(1)
				continue
			}
			var b [16]byte
			n, _ := resp.Body.Read(b[:])
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b[:n]) != "safe" {
				bad.Add(1)
			}
		}
	}()
	return calls, bad, ch
}

func TestIsolation(t *testing.T) {
	t.Parallel()
	f := setup(t)
	h := f.sharedHandler(t)
	ctx := context.Background()

	victim := tenantName()
	f.putFunction(t, victim, "victim", 1, `module.exports = async () => "safe";`, nil, map[string]string{"VICTIM_SECRET": "victim-config-value"})
	vroute := f.resolve(t, h, victim, "victim")
	var victimJob runnerJob
	for _, j := range f.jobs(t, h) {
		if j.Address == vroute.Address && !j.Stopped {
			victimJob = j
		}
	}
	if victimJob.ID == "" {
		t.Fatal("no job for the victim's runner")
	}
	_, victimPort, _ := net.SplitHostPort(vroute.Address)
	_, handlerPort, _ := net.SplitHostPort(h.addr)
	gw := bridgeGateway(t)
	nomadData := filepath.Join(f.env.StateDir, "nomad", "data")
	victimFile := filepath.Join(nomadData, "alloc", victimJob.AllocID, "runner", "local", "fnhook", "functions", "victim", "v1", "index.cjs")

	var targets [][2]string
	for _, host := range []string{"127.0.0.1", gw} {
		for _, port := range []string{"4646", "4647", "8500", "5672", "8000", "7070", "8080", "8082", victimPort, handlerPort} {
			if host == "127.0.0.1" && port == "8080" {
				continue // the runner's own port inside its network namespace
			}
			targets = append(targets, [2]string{host, port})
		}
	}
	reads := []string{
		victimFile,
		"/local/../../" + victimJob.AllocID + "/runner/local/fnhook/functions/victim/v1/index.cjs",
		nomadData + "/alloc/" + victimJob.AllocID + "/alloc/logs/runner.stdout.0",
		f.env.SecretsFile,
		"/etc/shadow",
	}
	tj, _ := json.Marshal(targets)
	rj, _ := json.Marshal(reads)
	attacker := tenantName()
	f.putFunction(t, attacker, "probe", 1, probeCode, nil, map[string]string{"TARGETS": string(tj), "READS": string(rj)})
	f.putFunction(t, attacker, "fork", 1, forkCode, nil, nil)
	f.putFunction(t, attacker, "bufbomb", 1, bufferBombCode, nil, nil)
	f.putFunction(t, attacker, "heapbomb", 1, heapBombCode, nil, nil)
	f.putFunction(t, attacker, "ok", 1, `module.exports = async () => "fine";`, nil, nil)
	aroute := f.resolve(t, h, attacker, "probe")
	if aroute.Address == vroute.Address {
		t.Fatal("attacker and victim share a runner")
	}

	stop := make(chan struct{})
	calls, bad, loopDone := f.victimLoop(vroute, stop)

	status, body := f.call(t, aroute, "probe", "", nil)
	if status != 200 {
		t.Fatalf("probe = %d %s", status, body)
	}
	var r probeReport
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("probe report: %v", err)
	}
	t.Logf("REALITY uid=%d gid=%d root=%v /alloc=%v /local=%v /etc=%v /bin=%v /usr=%v", r.UID, r.GID, r.Root, r.Alloc, r.Local, r.Etc, r.Bin, r.Usr)
	t.Logf("REALITY process.env=%v shell=%q writes=%v", r.Env, r.Shell, r.Writes)
	secrets := map[string]string{"test handler secret": f.secret, "platform handler secret": f.env.HandlerKey,
		"admin key": f.env.AdminKey, "s3 secret": f.env.SecretKey, "victim token": vroute.Token, "victim configuration": "victim-config-value"}

	t.Run("processes and environment", func(t *testing.T) {
		if r.UID == 0 {
			t.Errorf("tenant code runs as root")
		}
		// Nomad 1.11's exec driver sets the uid of user = "nobody" but leaves the gid 0.
		if r.GID == 0 {
			t.Logf("REALITY tenant code runs with gid 0 (Nomad exec driver sets only the uid)")
		}
		for k := range r.Env {
			if strings.HasPrefix(k, "FNHOOK_") || strings.HasPrefix(k, "NOMAD_") || strings.HasPrefix(k, "AWS_") || strings.HasPrefix(k, "CONSUL") {
				t.Errorf("tenant code sees %s in process.env", k)
			}
		}
		// Processes: only the runner's own (pid namespace), all of them node.
		for pid, p := range r.Pids {
			cmd := strings.ReplaceAll(p.Cmdline.Data, "\x00", " ")
			envKeys := []string{}
			for _, kv := range strings.Split(p.Environ.Data, "\x00") {
				if k, _, ok := strings.Cut(kv, "="); ok {
					envKeys = append(envKeys, k)
				}
			}
			t.Logf("REALITY pid %s: %q environ readable=%v keys=%v", pid, cmd, p.Environ.OK, envKeys)
			if !strings.Contains(cmd, "node") {
				t.Errorf("tenant code sees a process that is not the runner's: pid %s %q", pid, cmd)
			}
			for what, s := range secrets {
				if s != "" && strings.Contains(p.Environ.Data+p.Cmdline.Data, s) {
					t.Errorf("the %s is readable in /proc/%s", what, pid)
				}
			}
		}
		if len(r.Pids) > 6 {
			t.Errorf("tenant code sees %d processes; a runner has 2 or 3", len(r.Pids))
		}
		if !strings.HasPrefix(r.Shell, "ENOENT") && !strings.HasPrefix(r.Shell, "EACCES") {
			t.Errorf("a shell ran in the runner: %q", r.Shell)
		}
	})

	t.Run("files", func(t *testing.T) {
		for p, res := range r.Reads {
			if res.OK {
				t.Errorf("tenant code read %s", p)
			}
			for what, s := range secrets {
				if s != "" && strings.Contains(res.Data, s) {
					t.Errorf("the %s is readable in %s", what, p)
				}
			}
		}
		// Its own chroot is its own; the module cache and the runner program are shared.
		for _, p := range []string{"/modules/x", "/runner/x"} {
			if r.Writes[p] == "written" {
				t.Errorf("tenant code wrote %s", p)
			}
		}
	})

	t.Run("network", func(t *testing.T) {
		for target, res := range r.Connect {
			t.Logf("REALITY connect %s: %s", target, res)
			if res == "connected" {
				t.Errorf("tenant code reached %s from its runner", target)
			}
		}
	})

	t.Run("idle runner without its token", func(t *testing.T) {
		var idle runnerJob
		waitFor(t, "an idle runner", 60*time.Second, func() bool {
			ids := f.idleRunners(t, h)
			if len(ids) > 0 {
				idle = ids[0]
			}
			return len(ids) > 0
		})
		for _, token := range []string{"", aroute.Token, vroute.Token, "x"} {
			r := runnerapi.Runner{Address: idle.Address, Token: token}
			if err := f.runners.Assign(ctx, r, attacker); fnhook.StatusOf(err) != 401 {
				t.Errorf("assign with token %.8q = %v, want 401", token, err)
			}
			_, err := f.runners.Load(ctx, r, "evil", runnerapi.Function{Version: 1, Code: "module.exports = () => 1"})
			if fnhook.StatusOf(err) != 401 {
				t.Errorf("load with token %.8q = %v, want 401", token, err)
			}
			if _, err := f.runners.State(ctx, r); fnhook.StatusOf(err) != 401 {
				t.Errorf("state with token %.8q = %v, want 401", token, err)
			}
		}
		// Nothing of the attempts stuck (the handler may meanwhile have given the runner
		// to another test's tenant: that is fine).
		st, err := f.runners.State(ctx, runnerapi.Runner{Address: idle.Address, Token: runnerapi.Token(f.secret, idle.ID)})
		if err != nil || st.Tenant == attacker || st.Functions["evil"] != 0 {
			t.Errorf("runner after the attempts: %+v, %v", st, err)
		}
		// The victim's runner refuses the attacker's token.
		if s, _ := f.call(t, fnhook.Route{Address: vroute.Address, Token: aroute.Token}, "victim", "", nil); s != 401 {
			t.Errorf("victim called with the attacker's token: %d", s)
		}
	})

	for _, fn := range []string{"fork", "heapbomb", "bufbomb", "ok"} {
		if r := f.resolve(t, h, attacker, fn); r.Address != aroute.Address {
			t.Fatalf("attacker's %s on %s, not %s", fn, r.Address, aroute.Address)
		}
	}
	attack := func(t *testing.T, name string) (int, string) {
		client := &http.Client{Timeout: 25 * time.Second}
		req, _ := http.NewRequest(http.MethodPost, runnerapi.RunURL(aroute.Address, name, "", ""), nil)
		runnerapi.Authorize(req, aroute.Token)
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			t.Logf("%s: %v after %s", name, err, time.Since(start))
			return 0, err.Error()
		}
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 4096)
		n, _ := resp.Body.Read(buf)
		b.Write(buf[:n])
		t.Logf("%s: %d %s after %s", name, resp.StatusCode, b.String(), time.Since(start))
		return resp.StatusCode, b.String()
	}

	t.Run("spawn loop", func(t *testing.T) {
		status, body := attack(t, "fork")
		if status == 200 {
			var out struct {
				Spawned int            `json:"spawned"`
				Alive   int            `json:"alive"`
				Errors  map[string]int `json:"errors"`
			}
			_ = json.Unmarshal([]byte(body), &out)
			// Each node child takes tens of MB: the memory limit bounds how many live.
			if out.Alive > 40 {
				t.Errorf("%d spawned processes alive at once in one runner", out.Alive)
			}
		}
	})

	t.Run("heap bomb", func(t *testing.T) {
		if status, _ := attack(t, "heapbomb"); status == 200 {
			t.Error("an unbounded heap allocation answered 200")
		}
	})

	t.Run("buffer bomb", func(t *testing.T) {
		if status, _ := attack(t, "bufbomb"); status == 200 {
			t.Error("an unbounded buffer allocation answered 200")
		}
	})

	// The attacker's tenant recovers: the same runner once its child restarted, or a
	// fresh one if the container was killed.
	waitFor(t, "the attacker served again", 30*time.Second, func() bool {
		r, err := h.client.Do(ctx, h.addr, handlerapi.Request{Tenant: attacker, Function: "ok", Refresh: true})
		if err != nil {
			return false
		}
		s, b := f.call(t, r, "ok", "", nil)
		return s == 200 && b == "fine"
	})

	time.Sleep(500 * time.Millisecond)
	close(stop)
	<-loopDone
	t.Logf("victim calls during the attacks: %d, failed: %d", calls.Load(), bad.Load())
	if bad.Load() != 0 {
		t.Errorf("%d of %d victim calls failed during the attacks", bad.Load(), calls.Load())
	}
	if calls.Load() < 20 {
		t.Errorf("only %d victim calls ran during the attacks", calls.Load())
	}
	if s, b := f.call(t, vroute, "victim", "", nil); s != 200 || b != "safe" {
		t.Errorf("victim after the attacks = %d %q", s, b)
	}
}
