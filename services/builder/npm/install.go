// Package npm runs `npm install name@version` for untrusted packages. When the builder runs
// as root, each install runs in a sandbox (package sandbox) that reaches only the registry
// through an allowlisting egress proxy (package egress), as a dedicated build user, with
// bounded memory, processes, disk and time; in any case in a fresh temporary prefix, with
// an environment built from nothing and bounded captured output. It tells a permanent
// failure (no such version, an install script failed, a limit was hit) from a transient
// one (the registry or the network misbehaved).
package npm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fnhook/fnhook/services/builder/egress"
	"github.com/fnhook/fnhook/services/builder/sandbox"
)

// DefaultRegistry is the registry npm uses when FNHOOK_NPM_REGISTRY is not set.
const DefaultRegistry = "https://registry.npmjs.org/"

// DefaultUser is the account sandboxed installs run as.
const DefaultUser = "fnhook-build"

// proxyEnv are npm's settings pointed at the sandbox's egress proxy.
var proxyEnv = []string{"npm_config_proxy", "npm_config_https_proxy"}

// outputLimit bounds the npm output kept in memory: only its tail is of use.
const outputLimit = 8 << 10

// Config says how to run npm.
type Config struct {
	// NPM is the npm executable (a path, or a name looked up in PATH). Default "npm".
	NPM string
	// Registry is the registry URL given to npm. Default DefaultRegistry.
	Registry string
	// CAFile, when set, is extra CA certificates npm trusts (NODE_EXTRA_CA_CERTS).
	CAFile string
	// Timeout bounds one install; on expiry npm's whole process group is killed.
	Timeout time.Duration
	// WorkDir is where the temporary build folders are made (default os.TempDir()). Inside
	// the sandbox it is hidden: an install sees its own folder only.
	WorkDir string
	// User is the account npm runs as when the builder runs as root. Default DefaultUser;
	// root and nobody (which runners use) are refused.
	User string
	// FetchRetries is npm's own retry count for failed fetches; negative keeps npm's default.
	// The builder retries a whole build itself, so a small number keeps a flaky registry
	// from eating the time limit.
	FetchRetries int
	// TarballHosts are host[:port] (default port 443) or URLs the egress proxy allows besides
	// the registry's own host, for registries that serve tarballs from elsewhere.
	TarballHosts []string
	// Limits bound each sandboxed install (memory, processes, the size of its folder).
	Limits sandbox.Limits
	// Log receives the egress proxy's refusals (default: discarded).
	Log *slog.Logger
	// Metrics is where the egress proxy's metrics are registered (nil: not exported).
	Metrics prometheus.Registerer
}

// Installer runs sandboxed installs. It is safe for concurrent use.
type Installer struct {
	npm      string
	registry string
	regHost  string
	caFile   string
	timeout  time.Duration
	workDir  string
	path     string
	nodeDir  string
	retries  int
	log      *slog.Logger
	box      *sandbox.Sandbox // nil: not root, npm runs as the builder's own user
	proxy    *egress.Proxy
	expose   []string // what npm needs that may sit in a folder hidden in the sandbox
}

// New checks cfg and returns an Installer. It resolves npm and the sandbox user and, as
// root, runs a first program in the sandbox, so a misconfigured builder fails at start
// rather than on every message.
func New(cfg Config) (*Installer, error) {
	if cfg.NPM == "" {
		cfg.NPM = "npm"
	}
	if cfg.Registry == "" {
		cfg.Registry = DefaultRegistry
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 120 * time.Second
	}
	if cfg.WorkDir == "" {
		cfg.WorkDir = os.TempDir()
	}
	if cfg.User == "" {
		cfg.User = DefaultUser
	}
	if cfg.User == "nobody" || cfg.User == "root" {
		return nil, fmt.Errorf("build user %q: use a dedicated account such as %s (runners run as nobody)", cfg.User, DefaultUser)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	workDir, err := filepath.Abs(cfg.WorkDir)
	if err == nil {
		workDir, err = filepath.EvalSymlinks(workDir)
	}
	if err != nil {
		return nil, fmt.Errorf("work folder: %w", err)
	}
	u, err := url.Parse(cfg.Registry)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("npm registry %q is not an http(s) URL", cfg.Registry)
	}
	bin, err := exec.LookPath(cfg.NPM)
	if err != nil {
		return nil, fmt.Errorf("find npm: %w", err)
	}
	if bin, err = filepath.Abs(bin); err != nil {
		return nil, fmt.Errorf("find npm: %w", err)
	}
	in := &Installer{
		npm: bin, registry: cfg.Registry, regHost: u.Hostname(), caFile: cfg.CAFile,
		timeout: cfg.Timeout, workDir: workDir, path: sandboxPATH(bin), nodeDir: nodeHeaders(),
		retries: cfg.FetchRetries, log: cfg.Log,
	}
	if os.Geteuid() != 0 {
		return in, nil
	}
	allow := []string{cfg.Registry}
	for _, h := range cfg.TarballHosts {
		if h = strings.TrimSpace(h); h != "" {
			allow = append(allow, h)
		}
	}
	if in.proxy, err = egress.New(egress.Config{Allow: allow}, cfg.Metrics); err != nil {
		return nil, err
	}
	if in.box, err = sandbox.New(sandbox.Config{User: cfg.User, Limits: cfg.Limits, Mask: []string{workDir}}); err != nil {
		return nil, err
	}
	in.expose = exposed(bin, cfg.CAFile)
	if err := in.box.Check(context.Background()); err != nil {
		return nil, err
	}
	return in, nil
}

// Sandboxed reports whether installs run in the sandbox (the builder runs as root).
func (in *Installer) Sandboxed() bool { return in.box != nil }

// Sandbox returns the sandbox installs run in (nil when not Sandboxed), to report its limits.
func (in *Installer) Sandbox() *sandbox.Sandbox { return in.box }

// UID is the user id npm runs as (the builder's own when not sandboxed).
func (in *Installer) UID() int {
	if in.box != nil {
		return in.box.UID()
	}
	return os.Geteuid()
}

// exposed lists what npm needs to run (its folder, the CA file) so the sandbox keeps it
// visible even if it sits in a folder the sandbox hides (/tmp, the work folder).
func exposed(npmBin, caFile string) []string {
	paths := []string{filepath.Dir(npmBin)}
	if real, err := filepath.EvalSymlinks(npmBin); err == nil {
		paths = append(paths, filepath.Dir(real))
	}
	if caFile != "" {
		paths = append(paths, caFile)
	}
	return paths
}

// nodeHeaders returns the install prefix of the node in PATH when it holds Node's C
// headers (<prefix>/include/node/common.gypi, as Debian's nodejs and the official builds
// ship them), so node-gyp compiles native modules without downloading headers, which the
// sandbox could not.
func nodeHeaders() string {
	node, err := exec.LookPath("node")
	if err != nil {
		return ""
	}
	if real, err := filepath.EvalSymlinks(node); err == nil {
		node = real
	}
	prefix := filepath.Dir(filepath.Dir(node))
	if _, err := os.Stat(filepath.Join(prefix, "include", "node", "common.gypi")); err != nil {
		return ""
	}
	return prefix
}

// sandboxPATH is the PATH npm and install scripts get: where npm and node live, then the
// system folders. Nothing from the builder's own PATH leaks in.
func sandboxPATH(npmBin string) string {
	dirs := []string{}
	add := func(d string) {
		for _, have := range dirs {
			if have == d {
				return
			}
		}
		dirs = append(dirs, d)
	}
	add(filepath.Dir(npmBin))
	if real, err := filepath.EvalSymlinks(npmBin); err == nil {
		add(filepath.Dir(real))
	}
	if node, err := exec.LookPath("node"); err == nil {
		add(filepath.Dir(node))
	}
	for _, d := range []string{"/usr/local/bin", "/usr/bin", "/bin"} {
		add(d)
	}
	return strings.Join(dirs, ":")
}

// Workspace is one build's temporary folder. The caller calls Cleanup.
type Workspace struct {
	// Dir is the temporary root (owned by the sandbox user; in the sandbox, a size-limited
	// tmpfs).
	Dir string
	// Prefix is the npm prefix: it holds node_modules after a successful install.
	Prefix string
	// PeakMemory is the most memory the install used, in bytes (0 when not measured).
	PeakMemory int64
}

// Cleanup removes the workspace (unmounting its tmpfs first).
func (w *Workspace) Cleanup() error {
	if w == nil || w.Dir == "" {
		return nil
	}
	if err := sandbox.UnmountWorkspace(w.Dir); err != nil {
		return err
	}
	return os.RemoveAll(w.Dir)
}

// workspacePattern names the temporary build folders (os.MkdirTemp pattern).
const workspacePattern = "fnhook-build-"

// Sweep removes build folders and files (named fnhook-build-*) in the work folder last
// changed more than olderThan ago, unmounting their tmpfs, and the sandbox's cgroups as
// old: what a builder killed mid-build left behind. olderThan must exceed the longest
// build, so what another builder process uses is never touched.
func (in *Installer) Sweep(olderThan time.Duration) (removed int, err error) {
	if in.box != nil {
		removed += in.box.Sweep(olderThan)
		removed += sandbox.SweepMounts(workspacePattern, olderThan)
	}
	entries, err := os.ReadDir(in.workDir)
	if err != nil {
		return 0, fmt.Errorf("sweep %s: %w", in.workDir, err)
	}
	cutoff := time.Now().Add(-olderThan)
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), workspacePattern) {
			continue
		}
		info, err := e.Info()
		if err != nil || info.ModTime().After(cutoff) {
			continue
		}
		p := filepath.Join(in.workDir, e.Name())
		if err := sandbox.UnmountWorkspace(p); err != nil {
			continue
		}
		if err := os.RemoveAll(p); err == nil {
			removed++
		}
	}
	return removed, nil
}

// Layout of a workspace, relative to its Dir.
const (
	prefixDir = "prefix"
	homeDir   = "home"
	cacheDir  = "cache"
	tmpDir    = "tmp"
)

// Env returns the complete environment npm runs with for a workspace rooted at dir. It is
// built from nothing: the builder's own variables (AWS keys, the admin key, FNHOOK_*) are
// never passed to code from the registry. In the sandbox the proxy settings are added.
func (in *Installer) Env(dir string) []string {
	env := []string{
		"PATH=" + in.path,
		"HOME=" + filepath.Join(dir, homeDir),
		"TMPDIR=" + filepath.Join(dir, tmpDir),
		"npm_config_cache=" + filepath.Join(dir, cacheDir),
		"npm_config_registry=" + in.registry,
	}
	if in.nodeDir != "" {
		env = append(env, "npm_config_nodedir="+in.nodeDir)
	}
	if in.caFile != "" {
		env = append(env, "NODE_EXTRA_CA_CERTS="+in.caFile)
	}
	return env
}

// Args returns npm's command line for name@version into prefix.
func (in *Installer) Args(prefix, name, version string) []string {
	args := []string{
		"install", "--no-audit", "--no-fund", "--omit=dev", "--no-package-lock",
		"--ignore-scripts=false", "--no-update-notifier",
		"--prefix", prefix,
	}
	if in.retries >= 0 {
		args = append(args, "--fetch-retries="+strconv.Itoa(in.retries),
			"--fetch-retry-mintimeout=1000", "--fetch-retry-maxtimeout=10000")
	}
	return append(args, name+"@"+version)
}

// Install runs npm install name@version in a fresh workspace. On success the workspace
// holds prefix/node_modules; on failure it is removed and the error is a *Failure (or ctx's
// error when ctx ended first).
func (in *Installer) Install(ctx context.Context, name, version string) (*Workspace, error) {
	ws, err := in.prepare()
	if err != nil {
		return nil, &Failure{Transient: true, Reason: "workspace", Message: "could not prepare the build folder", Err: err}
	}
	err = in.run(ctx, ws, name, version)
	if err != nil {
		_ = ws.Cleanup()
		return nil, err
	}
	return ws, nil
}

func (in *Installer) prepare() (*Workspace, error) {
	dir, err := os.MkdirTemp(in.workDir, workspacePattern)
	if err != nil {
		return nil, err
	}
	ws := &Workspace{Dir: dir, Prefix: filepath.Join(dir, prefixDir)}
	if in.box != nil {
		if err := in.box.MountWorkspace(dir); err != nil {
			_ = os.Remove(dir)
			return nil, err
		}
	}
	for _, d := range []string{prefixDir, homeDir, cacheDir, tmpDir} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			_ = ws.Cleanup()
			return nil, err
		}
	}
	pkg := filepath.Join(ws.Prefix, "package.json")
	if err := os.WriteFile(pkg, []byte(`{"private":true}`+"\n"), 0o600); err != nil {
		_ = ws.Cleanup()
		return nil, err
	}
	if in.box != nil {
		uid, gid := in.box.UID(), in.box.GID()
		for _, p := range []string{dir, ws.Prefix, pkg, filepath.Join(dir, homeDir), filepath.Join(dir, cacheDir), filepath.Join(dir, tmpDir)} {
			if err := os.Lchown(p, uid, gid); err != nil {
				_ = ws.Cleanup()
				return nil, fmt.Errorf("chown %s to the sandbox user: %w", p, err)
			}
		}
	}
	return ws, nil
}

func (in *Installer) run(ctx context.Context, ws *Workspace, name, version string) error {
	ictx, cancel := context.WithTimeout(ctx, in.timeout)
	defer cancel()
	out := &tail{limit: outputLimit}
	start := time.Now()
	var res sandbox.Result
	var err error
	if in.box != nil {
		res, err = in.runSandboxed(ictx, ws, name, version, out)
		ws.PeakMemory = res.PeakMemory
	} else {
		res, err = in.runDirect(ictx, ws, name, version, out)
	}
	if err == nil && res.Success() {
		return nil
	}
	text := out.String()
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("npm install %s@%s interrupted: %w", name, version, ctx.Err())
	case errors.Is(ictx.Err(), context.DeadlineExceeded):
		return &Failure{
			Reason:  "timeout",
			Message: truncate(strings.TrimSpace(fmt.Sprintf("npm install did not finish within %s\n%s", in.timeout, Summarize(text, ws.Dir))), MessageLimit),
		}
	case err != nil:
		// npm could not be started (or its sandbox set up): the builder's fault, not the module's.
		return &Failure{Transient: true, Reason: "start", Message: "npm could not be started", Err: err}
	}
	code, transient := Classify(text, in.regHost)
	f := &Failure{Transient: transient, Reason: code, Message: Summarize(text, ws.Dir), Err: exitError(res)}
	lim := sandbox.Limits{}
	if in.box != nil {
		lim = in.box.Limits()
	}
	// A limit the module hit is the module's own doing: trying again ends the same way.
	switch {
	case res.OOMKilled:
		f.Transient, f.Reason = false, "memory"
		f.Message = fmt.Sprintf("npm install ran out of memory: the builder allows %d MiB\n%s", lim.MemoryBytes>>20, f.Message)
	case res.PidsLimited:
		f.Transient, f.Reason = false, "pids"
		f.Message = fmt.Sprintf("npm install started too many processes: the builder allows %d\n%s", lim.Pids, f.Message)
	case lim.DiskBytes > 0 && (code == "ENOSPC" || strings.Contains(text, "ENOSPC") || strings.Contains(text, "No space left on device")):
		f.Transient, f.Reason = false, "disk"
		f.Message = fmt.Sprintf("npm install ran out of disk space: the builder allows %d MiB\n%s", lim.DiskBytes>>20, f.Message)
	case in.box != nil && code == "E403" && deniedHost(text, in.regHost) != "":
		f.Message = fmt.Sprintf("the build reaches only the npm registry, not %s (dependencies from git or other hosts cannot be installed)\n%s",
			deniedHost(text, in.regHost), f.Message)
	case res.Signal != 0:
		// Not our time limit (handled above): most likely the kernel's OOM killer.
		f.Message = fmt.Sprintf("npm was killed by signal %s after %s\n%s", res.Signal, time.Since(start).Round(time.Second), f.Message)
		if f.Reason == "" {
			f.Reason = "killed"
		}
	}
	if f.Reason == "" {
		f.Reason = "exit"
	}
	if strings.TrimSpace(f.Message) == "" {
		f.Message = fmt.Sprintf("npm install exited with status %d and printed no error", res.ExitCode)
	}
	f.Message = truncate(strings.TrimSpace(f.Message), MessageLimit)
	return f
}

var forbiddenURL = regexp.MustCompile(`403 Forbidden - [A-Z]+ (https?://[^\s/]+)`)

// deniedHost returns the host of a 403 npm printed for another host than the registry's
// (the egress proxy refused it), or "".
func deniedHost(output, registryHost string) string {
	for _, m := range forbiddenURL.FindAllStringSubmatch(output, -1) {
		if u, err := url.Parse(m[1]); err == nil && u.Hostname() != registryHost {
			return u.Host
		}
	}
	return ""
}

func exitError(res sandbox.Result) error {
	if res.Signal != 0 {
		return fmt.Errorf("npm was killed by signal %s", res.Signal)
	}
	return fmt.Errorf("npm exited with status %d", res.ExitCode)
}

// runSandboxed runs npm in the sandbox, its egress going through a proxy session of its
// own (so each refusal is logged with the module).
func (in *Installer) runSandboxed(ctx context.Context, ws *Workspace, name, version string, out io.Writer) (sandbox.Result, error) {
	// A folder only root can enter: nothing but this build's sandbox reaches the socket.
	sockDir, err := os.MkdirTemp(in.workDir, workspacePattern+"egress-")
	if err != nil {
		return sandbox.Result{}, fmt.Errorf("egress socket folder: %w", err)
	}
	defer os.RemoveAll(sockDir)
	sock := filepath.Join(sockDir, "proxy.sock")
	// A socket's path may be at most 107 bytes, and the work folder can be deep (under
	// Nomad it is in the allocation's folder): bind through a descriptor of the folder.
	dir, err := os.Open(sockDir)
	if err != nil {
		return sandbox.Result{}, fmt.Errorf("egress socket folder: %w", err)
	}
	defer dir.Close()
	ln, err := net.Listen("unix", "/proc/self/fd/"+strconv.Itoa(int(dir.Fd()))+"/proxy.sock")
	if err != nil {
		return sandbox.Result{}, fmt.Errorf("egress socket: %w", err)
	}
	pctx, stop := context.WithCancel(ctx)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = in.proxy.Serve(pctx, ln, in.log.With("module", name+"@"+version))
	}()
	defer func() {
		stop()
		<-served
	}()
	return in.box.Run(ctx, &sandbox.Cmd{
		Name: filepath.Base(ws.Dir), Path: in.npm, Args: in.Args(ws.Prefix, name, version),
		Env: in.Env(ws.Dir), Dir: ws.Prefix, Stdout: out, Stderr: out,
		Workspace: ws.Dir, Expose: in.expose, Proxy: sock, ProxyEnv: proxyEnv,
	})
}

// runDirect runs npm as the builder's own user, without a sandbox (the builder is not root).
func (in *Installer) runDirect(ctx context.Context, ws *Workspace, name, version string, out io.Writer) (sandbox.Result, error) {
	cmd := exec.CommandContext(ctx, in.npm, in.Args(ws.Prefix, name, version)...)
	cmd.Dir = ws.Prefix
	cmd.Env = in.Env(ws.Dir)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group, so expiry kills install scripts' children too.
		Setpgid: true,
		// If the builder dies, npm dies with it instead of running on unsupervised.
		Pdeathsig: syscall.SIGKILL,
	}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// Grandchildren that keep the output pipe open must not hold Wait forever.
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if cmd.Process != nil {
		// Stragglers an install script left behind in the group must not touch the files
		// while they are packed.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return sandbox.Result{}, nil
	case errors.As(err, &ee):
		res := sandbox.Result{ExitCode: ee.ExitCode()}
		if st, ok := ee.Sys().(syscall.WaitStatus); ok && st.Signaled() {
			res.Signal = st.Signal()
		}
		return res, nil
	default:
		return sandbox.Result{}, err
	}
}
