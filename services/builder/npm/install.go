// Package npm runs `npm install name@version` for untrusted packages in a sandbox: a fresh
// temporary prefix, an environment built from nothing, an unprivileged user when the builder
// runs as root, its own process group, a time limit, and bounded captured output. It tells
// a permanent failure (no such version, an install script failed, too slow) from a
// transient one (the registry or the network misbehaved).
package npm

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DefaultRegistry is the registry npm uses when FNHOOK_NPM_REGISTRY is not set.
const DefaultRegistry = "https://registry.npmjs.org/"

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
	// WorkDir is where the temporary build folders are made (default os.TempDir()). When the
	// builder runs as root, the sandbox user must be able to traverse it.
	WorkDir string
	// User is the account npm runs as when the builder runs as root. Default "nobody".
	User string
	// FetchRetries is npm's own retry count for failed fetches; negative keeps npm's default.
	// The builder retries a whole build itself, so a small number keeps a flaky registry
	// from eating the time limit.
	FetchRetries int
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
	cred     *syscall.Credential // nil: run as the builder's own user
	retries  int
}

// New checks cfg and returns an Installer. It resolves npm and the sandbox user once, so a
// misconfigured builder fails at start rather than on every message.
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
		cfg.User = "nobody"
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
		timeout: cfg.Timeout, workDir: cfg.WorkDir, path: sandboxPATH(bin), retries: cfg.FetchRetries,
	}
	if os.Geteuid() == 0 {
		cred, err := lookupCredential(cfg.User)
		if err != nil {
			return nil, err
		}
		in.cred = cred
	}
	return in, nil
}

// Sandboxed reports whether npm runs as another, unprivileged user.
func (in *Installer) Sandboxed() bool { return in.cred != nil }

// UID is the user id npm runs as (the builder's own when not sandboxed).
func (in *Installer) UID() int {
	if in.cred != nil {
		return int(in.cred.Uid)
	}
	return os.Geteuid()
}

func lookupCredential(name string) (*syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("sandbox user %q: %w", name, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("sandbox user %q has a non-numeric uid or gid", name)
	}
	if uid == 0 {
		return nil, fmt.Errorf("sandbox user %q is root", name)
	}
	// Groups is empty on purpose: no supplementary group of the builder is inherited.
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
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
	// Dir is the temporary root (owned by the sandbox user).
	Dir string
	// Prefix is the npm prefix: it holds node_modules after a successful install.
	Prefix string
}

// Cleanup removes the workspace.
func (w *Workspace) Cleanup() error {
	if w == nil || w.Dir == "" {
		return nil
	}
	return os.RemoveAll(w.Dir)
}

// workspacePattern names the temporary build folders (os.MkdirTemp pattern).
const workspacePattern = "fnhook-build-"

// Sweep removes build folders and files (named fnhook-build-*) in the work folder last
// changed more than olderThan ago: what a builder killed mid-build left behind. olderThan
// must exceed the longest build, so what another builder process uses is never touched.
func (in *Installer) Sweep(olderThan time.Duration) (removed int, err error) {
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
		if err := os.RemoveAll(filepath.Join(in.workDir, e.Name())); err == nil {
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
)

// Env returns the complete environment npm runs with for a workspace rooted at dir. It is
// built from nothing: the builder's own variables (AWS keys, the admin key, FNHOOK_*) are
// never passed to code from the registry.
func (in *Installer) Env(dir string) []string {
	env := []string{
		"PATH=" + in.path,
		"HOME=" + filepath.Join(dir, homeDir),
		"npm_config_cache=" + filepath.Join(dir, cacheDir),
		"npm_config_registry=" + in.registry,
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
	for _, d := range []string{prefixDir, homeDir, cacheDir} {
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
	if in.cred != nil {
		uid, gid := int(in.cred.Uid), int(in.cred.Gid)
		for _, p := range []string{dir, ws.Prefix, pkg, filepath.Join(dir, homeDir), filepath.Join(dir, cacheDir)} {
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
	cmd := exec.CommandContext(ictx, in.npm, in.Args(ws.Prefix, name, version)...)
	cmd.Dir = ws.Prefix
	cmd.Env = in.Env(ws.Dir)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group, so expiry kills install scripts' children too.
		Setpgid: true,
		// If the builder dies, npm dies with it instead of running on unsupervised.
		Pdeathsig:  syscall.SIGKILL,
		Credential: in.cred,
	}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// Grandchildren that keep the output pipe open must not hold Wait forever.
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	if cmd.Process != nil {
		// Stragglers an install script left behind in the group must not touch the files
		// while they are packed.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if err == nil {
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
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		// npm could not be started: the builder's fault, not the module's.
		return &Failure{Transient: true, Reason: "start", Message: "npm could not be started", Err: err}
	}
	code, transient := Classify(text, in.regHost)
	f := &Failure{Transient: transient, Reason: code, Message: Summarize(text, ws.Dir), Err: err}
	if st, ok := ee.Sys().(syscall.WaitStatus); ok && st.Signaled() {
		// Not our time limit (handled above): most likely the kernel's OOM killer.
		f.Message = fmt.Sprintf("npm was killed by signal %s after %s\n%s", st.Signal(), time.Since(start).Round(time.Second), f.Message)
		if f.Reason == "" {
			f.Reason = "killed"
		}
	}
	if f.Reason == "" {
		f.Reason = "exit"
	}
	if strings.TrimSpace(f.Message) == "" {
		f.Message = fmt.Sprintf("npm install exited with status %d and printed no error", ee.ExitCode())
	}
	f.Message = truncate(strings.TrimSpace(f.Message), MessageLimit)
	return f
}
