package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha1"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fnhook/fnhook/services/builder/npm"
	"github.com/fnhook/fnhook/services/builder/sandbox"
)

func TestMain(m *testing.M) {
	sandbox.Main()
	os.Exit(m.Run())
}

// registry is an npm registry served by the test on 127.0.0.1: packuments and tarballs of
// packages the test makes in memory.
type registry struct {
	*httptest.Server
	mu   sync.Mutex
	pkgs map[string][]byte // name -> packument JSON
	tgzs map[string][]byte // tarball path -> bytes
}

func newRegistry(t *testing.T) *registry {
	r := &registry{pkgs: map[string][]byte{}, tgzs: map[string][]byte{}}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if b, ok := r.tgzs[req.URL.Path]; ok {
			w.Header().Set("Content-Type", "application/octet-stream")
			_, _ = w.Write(b)
			return
		}
		name, _ := url.PathUnescape(strings.TrimPrefix(req.URL.Path, "/"))
		if b, ok := r.pkgs[name]; ok {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(b)
			return
		}
		http.Error(w, `{"error":"Not found"}`, http.StatusNotFound)
	}))
	t.Cleanup(r.Close)
	return r
}

// publish adds name@1.0.0 with the given files (package.json is made from pkg).
func (r *registry) publish(t *testing.T, name string, pkg map[string]any, files map[string]string) {
	t.Helper()
	pkg["name"], pkg["version"] = name, "1.0.0"
	pj, err := json.Marshal(pkg)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	add := func(path, body string) {
		hdr := &tar.Header{Name: "package/" + path, Mode: 0o644, Size: int64(len(body)), ModTime: time.Unix(1700000000, 0), Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, body); err != nil {
			t.Fatal(err)
		}
	}
	add("package.json", string(pj))
	for p, body := range files {
		add(p, body)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	tgz := buf.Bytes()
	s1 := sha1.Sum(tgz)
	s512 := sha512.Sum512(tgz)
	tarPath := "/" + name + "/-/" + name + "-1.0.0.tgz"
	version := map[string]any{}
	for k, v := range pkg {
		version[k] = v
	}
	_, hasScripts := pkg["scripts"]
	version["hasInstallScript"] = hasScripts
	version["dist"] = map[string]any{
		"tarball":   r.URL + tarPath,
		"shasum":    hex.EncodeToString(s1[:]),
		"integrity": "sha512-" + base64.StdEncoding.EncodeToString(s512[:]),
	}
	doc, err := json.Marshal(map[string]any{
		"name": name, "dist-tags": map[string]string{"latest": "1.0.0"},
		"versions": map[string]any{"1.0.0": version},
	})
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.pkgs[name], r.tgzs[tarPath] = doc, tgz
	r.mu.Unlock()
}

// probe is the postinstall script of the attack package. It tries what a malicious install
// script would, and writes what it achieved to findings.json in its own folder.
const probe = `
const fs = require("fs"), net = require("net"), http = require("http"), os = require("os");
const targets = JSON.parse(process.argv[2]);
const findings = {connects: {}, reads: {}};
const tryConnect = (host, port) => new Promise(res => {
  const s = net.connect({host, port});
  const timer = setTimeout(() => { s.destroy(); res("timeout"); }, 3000);
  s.on("connect", () => { clearTimeout(timer); s.destroy(); res("connected"); });
  s.on("error", e => { clearTimeout(timer); res(e.code || String(e)); });
});
const viaProxy = url => new Promise(res => {
  const p = process.env.npm_config_proxy || process.env.npm_config_https_proxy;
  if (!p) return res("no proxy in the environment");
  const proxy = new URL(p);
  const req = http.get({host: proxy.hostname, port: proxy.port, path: url, headers: {host: new URL(url).host}}, r => {
    r.resume(); r.on("end", () => res(r.statusCode));
  });
  req.setTimeout(5000, () => { req.destroy(); res("timeout"); });
  req.on("error", e => res(e.code || String(e)));
});
(async () => {
  for (const [host, port] of targets.connect) findings.connects[host + ":" + port] = await tryConnect(host, port);
  findings.proxied = await viaProxy("http://127.0.0.1:4646/v1/jobs");
  for (const f of targets.read) {
    try { findings.reads[f] = "read " + fs.readFileSync(f).length + " bytes"; }
    catch (e) { findings.reads[f] = e.code || String(e); }
  }
  findings.uid = process.getuid(); findings.gid = process.getgid(); findings.groups = process.getgroups();
  findings.env = Object.keys(process.env).sort();
  fs.writeFileSync("findings.json", JSON.stringify(findings));
})();
`

type findings struct {
	Connects map[string]string
	Reads    map[string]string
	Proxied  any
	UID, GID int
	Groups   []int
	Env      []string
}

// requireRoot fails the test when it does not run as root: only root can build the
// sandbox, and `make test` (CI) runs as root, so a sandbox test must never be skipped there.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the build sandbox needs root: run the tests as root, as make test does")
	}
}

// TestInstallScriptReachesNothing publishes a package whose postinstall attacks the host
// the way the measured issue did, builds it through the Installer, and checks from its
// findings that it reached no platform service, read no secret and ran as the build user.
func TestInstallScriptReachesNothing(t *testing.T) {
	requireRoot(t)
	buildUser, err := user.Lookup(npm.DefaultUser)
	if err != nil {
		t.Fatalf("the build user must exist (scripts/install.sh makes it): %v", err)
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}

	// A server of the test's own on host loopback: if the sandbox shared the host's
	// network, the probe would reach it whatever else runs on this machine.
	own, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	var ownHits sync.WaitGroup
	ownHit := make(chan struct{}, 1)
	ownHits.Add(1)
	go func() {
		defer ownHits.Done()
		for {
			c, err := own.Accept()
			if err != nil {
				return
			}
			select {
			case ownHit <- struct{}{}:
			default:
			}
			c.Close()
		}
	}()
	ownPort := own.Addr().(*net.TCPAddr).Port

	// Secrets only root may read, in root-only folders: one outside /tmp (only file
	// permissions protect it) and one in /tmp.
	secretDir, err := os.MkdirTemp(".", ".secret-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(secretDir) })
	secretDir, _ = filepath.Abs(secretDir)
	tmpSecretDir := t.TempDir()
	var secrets []string
	for _, d := range []string{secretDir, tmpSecretDir} {
		if err := os.Chmod(d, 0o700); err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(d, "secrets.env")
		if err := os.WriteFile(f, []byte("FNHOOK_ADMIN_KEY=must-not-leak\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, f)
	}

	type hostPort [2]any
	var connect []hostPort
	for _, p := range []int{4646, 8500, 5672, 8000, 7070, 8080, 8081, 8082, 8083, ownPort} {
		connect = append(connect, hostPort{"127.0.0.1", p})
	}
	// The Nomad bridge's gateway: the one non-loopback address the probe may try.
	connect = append(connect, hostPort{"172.26.64.1", 4646})
	reads := append([]string{"/proc/1/environ", "/proc/" + strconv.Itoa(os.Getpid()) + "/environ"}, secrets...)
	targets, err := json.Marshal(map[string]any{"connect": connect, "read": reads})
	if err != nil {
		t.Fatal(err)
	}

	reg := newRegistry(t)
	reg.publish(t, "fnhook-probe", map[string]any{
		"scripts": map[string]string{"postinstall": "node probe.js '" + string(targets) + "'"},
	}, map[string]string{"probe.js": probe})
	reg.publish(t, "fnhook-plain", map[string]any{"main": "index.js"}, map[string]string{
		"index.js": `module.exports = "plain-ok";`,
	})

	metrics := prometheus.NewRegistry()
	in, err := npm.New(npm.Config{
		Registry: reg.URL + "/", Timeout: 90 * time.Second, FetchRetries: 0,
		CAFile:  os.Getenv("NODE_EXTRA_CA_CERTS"),
		Limits:  sandbox.Limits{MemoryBytes: 1 << 30, Pids: 512, DiskBytes: 1 << 30},
		Log:     slog.New(slog.NewTextHandler(testWriter{t}, nil)),
		Metrics: metrics,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !in.Sandboxed() {
		t.Fatal("running as root, yet the installer is not sandboxed")
	}
	ctx := context.Background()
	ws, err := in.Install(ctx, "fnhook-probe", "1.0.0")
	if err != nil {
		t.Fatalf("install the probe: %v", err)
	}
	defer ws.Cleanup()
	raw, err := os.ReadFile(filepath.Join(ws.Prefix, "node_modules", "fnhook-probe", "findings.json"))
	if err != nil {
		t.Fatalf("the probe's postinstall left no findings: %v", err)
	}
	t.Logf("findings: %s", raw)
	var got findings
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}

	if len(got.Connects) != len(connect) {
		t.Errorf("the probe tried %d connections, want %d", len(got.Connects), len(connect))
	}
	for target, outcome := range got.Connects {
		// Refused or unreachable both mean "not reached"; only a connection is a failure.
		if outcome == "connected" {
			t.Errorf("the install script connected to %s", target)
		}
	}
	select {
	case <-ownHit:
		t.Error("the test's own loopback server was reached from the install script")
	default:
	}
	if got.Proxied != float64(403) {
		t.Errorf("a request for Nomad's API through the proxy got %v, want 403", got.Proxied)
	}
	if n := counterValue(t, metrics, "fnhook_builder_egress_denied_total"); n < 1 {
		t.Errorf("fnhook_builder_egress_denied_total = %v after a denied request", n)
	}
	for _, f := range reads {
		if r := got.Reads[f]; r == "" || strings.HasPrefix(r, "read ") {
			t.Errorf("reading %s: %q, want an error", f, r)
		}
	}
	wantUID, _ := strconv.Atoi(buildUser.Uid)
	wantGID, _ := strconv.Atoi(buildUser.Gid)
	if got.UID != wantUID || got.GID != wantGID || got.UID == 0 || buildUser.Uid == nobody.Uid {
		t.Errorf("the install script ran as %d:%d, want the build user %d:%d (not root, not nobody)", got.UID, got.GID, wantUID, wantGID)
	}
	if len(got.Groups) != 1 || got.Groups[0] != wantGID {
		t.Errorf("the install script has groups %v, want only %d", got.Groups, wantGID)
	}
	for _, k := range got.Env {
		if strings.HasPrefix(k, "FNHOOK_") || strings.HasPrefix(k, "AWS_") {
			t.Errorf("the install script got the builder's variable %s", k)
		}
	}

	// A normal package still installs, from the same registry through the same proxy.
	plain, err := in.Install(ctx, "fnhook-plain", "1.0.0")
	if err != nil {
		t.Fatalf("install a plain package: %v", err)
	}
	defer plain.Cleanup()
	if out := nodeRequire(t, filepath.Join(plain.Prefix, "node_modules", "fnhook-plain"), "m"); out != "plain-ok" {
		t.Errorf("fnhook-plain printed %q", out)
	}
	own.Close()
	ownHits.Wait()
}

// TestDependencyFromAnotherHostFailsClearly: a dependency fetched from elsewhere than the
// registry is refused by the proxy, and the build fails for good saying why.
func TestDependencyFromAnotherHostFailsClearly(t *testing.T) {
	requireRoot(t)
	reg := newRegistry(t)
	reg.publish(t, "fnhook-urldep", map[string]any{
		"dependencies": map[string]string{"x": "https://example.com/x.tgz"},
	}, map[string]string{"index.js": "module.exports = 1;"})
	in, err := npm.New(npm.Config{Registry: reg.URL + "/", Timeout: 60 * time.Second,
		Limits: sandbox.Limits{MemoryBytes: 1 << 30, Pids: 512, DiskBytes: 1 << 30}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = in.Install(context.Background(), "fnhook-urldep", "1.0.0")
	var f *npm.Failure
	if !errors.As(err, &f) || f.Transient || f.Reason != "E403" ||
		!strings.HasPrefix(f.Message, "the build reaches only the npm registry, not example.com") {
		t.Fatalf("Install: %v; want a permanent E403 naming example.com", err)
	}
}

// TestPublicRegistryThroughTheProxy installs a real package from the public registry (as
// the other builder tests do), so the proxy's CONNECT path is exercised with TLS.
func TestPublicRegistryThroughTheProxy(t *testing.T) {
	requireRoot(t)
	in, err := npm.New(npm.Config{CAFile: os.Getenv("NODE_EXTRA_CA_CERTS"), Timeout: 90 * time.Second, FetchRetries: 1,
		Limits: sandbox.Limits{MemoryBytes: 1 << 30, Pids: 512, DiskBytes: 1 << 30}})
	if err != nil {
		t.Fatal(err)
	}
	ws, err := in.Install(context.Background(), "dayjs", "1.11.13")
	if err != nil {
		t.Fatalf("install dayjs: %v", err)
	}
	defer ws.Cleanup()
	dir := filepath.Join(ws.Prefix, "node_modules", "dayjs")
	if out := nodeRequire(t, dir, `m("2024-02-29T12:00:00Z").add(1, "year").format("YYYY-MM-DD")`); out != "2025-02-28" {
		t.Errorf("dayjs printed %q", out)
	}
	t.Logf("dayjs: peak memory %d MiB", ws.PeakMemory>>20)
}

// TestNativeModuleCompiles builds a package with a binding.gyp in the sandbox: node-gyp
// must find Node's headers locally (it cannot download them) and the host's compiler.
func TestNativeModuleCompiles(t *testing.T) {
	requireRoot(t)
	for _, tool := range []string{"cc", "c++", "make", "python3"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("no %s on this host: the builder's hosts need a compiler for native modules (scripts/install.sh's Debian has it)", tool)
		}
	}
	reg := newRegistry(t)
	reg.publish(t, "fnhook-native", map[string]any{
		"main":    "index.js",
		"gypfile": true,
		"scripts": map[string]string{"install": "node-gyp rebuild"},
	}, map[string]string{
		"binding.gyp": `{"targets": [{"target_name": "hello", "sources": ["hello.c"]}]}`,
		"hello.c": `#include <node_api.h>
static napi_value Hello(napi_env env, napi_callback_info info) {
  napi_value s;
  napi_create_string_utf8(env, "native-ok", NAPI_AUTO_LENGTH, &s);
  return s;
}
NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "hello", NAPI_AUTO_LENGTH, Hello, NULL, &fn);
  napi_set_named_property(env, exports, "hello", fn);
  return exports;
}
`,
		"index.js": `module.exports = require("./build/Release/hello.node");`,
	})
	in, err := npm.New(npm.Config{Registry: reg.URL + "/", Timeout: 120 * time.Second,
		Limits: sandbox.Limits{MemoryBytes: 1 << 30, Pids: 512, DiskBytes: 1 << 30}})
	if err != nil {
		t.Fatal(err)
	}
	ws, err := in.Install(context.Background(), "fnhook-native", "1.0.0")
	if err != nil {
		t.Fatalf("install a native module: %v", err)
	}
	defer ws.Cleanup()
	if out := nodeRequire(t, filepath.Join(ws.Prefix, "node_modules", "fnhook-native"), "m.hello()"); out != "native-ok" {
		t.Errorf("the native module printed %q", out)
	}
}

// nodeRequire requires the module at dir as m and prints expr.
func nodeRequire(t *testing.T, dir, expr string) string {
	t.Helper()
	out, err := exec.Command("node", "-e", fmt.Sprintf("const m = require(%q); console.log(%s)", dir, expr)).CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out))
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
