// Package sandbox runs one untrusted program (npm install and its install scripts) where
// it can reach nothing but an egress proxy: in new network, mount, pid, IPC and UTS
// namespaces, as a dedicated unprivileged user, in cgroups bounding its memory and
// processes, with a size-limited tmpfs as the only place it can fill.
//
// The namespaces are set up by a helper: this same binary started again with argv[0] set
// to HelperName. Every binary that runs a sandbox (the builder, and the test binaries of
// packages that use it) calls Main first thing.
//
// Inside, the network namespace holds only a loopback interface; the helper listens on
// 127.0.0.1:<port> there and forwards each connection to the proxy's unix socket, which
// is the only way out. Host loopback ports and the Nomad bridge are not reachable from
// that namespace at all.
package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Limits bound one run. Zero means no limit of that kind.
type Limits struct {
	// MemoryBytes bounds the memory of all the run's processes together (page cache and
	// tmpfs pages they write included); over it the kernel OOM-kills one of them.
	MemoryBytes int64
	// Pids bounds the run's processes and threads together; over it fork fails.
	Pids int
	// DiskBytes is the size of the tmpfs MountWorkspace mounts.
	DiskBytes int64
}

// Config says how to build the sandbox.
type Config struct {
	// User is the account programs run as: not root, and not nobody (runners use it).
	User string
	// Limits bound each run.
	Limits Limits
	// Mask lists folders hidden (covered by an empty root-owned tmpfs) inside, beyond the
	// defaults (/run); typically the folder the workspaces are made in, so a run sees no
	// other run's files. A Workspace or Expose path under a masked folder stays visible.
	Mask []string
	// CgroupRoot is where the cgroup hierarchies are mounted. Default /sys/fs/cgroup.
	CgroupRoot string
}

// Scratch folders get a fresh writable tmpfs of this size inside: what a program writes
// there is bounded and goes away with the run.
var scratchDirs = []string{"/tmp", "/var/tmp", "/dev/shm"}

const scratchBytes = 256 << 20

// Masked by default: sockets of local daemons (a database, D-Bus) and their state.
var defaultMask = []string{"/run"}

// Sandbox runs programs in the sandbox. It is safe for concurrent use.
type Sandbox struct {
	uid, gid uint32
	limits   Limits
	mask     []string
	cg       *cgroups
	missing  []string
}

// New checks that the builder can build the sandbox (it must run as root) and resolves the
// user. Limits whose mechanism is missing (no writable cgroup hierarchy) are reported by
// Missing, not as an error.
func New(cfg Config) (*Sandbox, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the sandbox needs root (to make namespaces, cgroups and mounts, and to switch user)")
	}
	uid, gid, err := LookupUser(cfg.User)
	if err != nil {
		return nil, err
	}
	if cfg.CgroupRoot == "" {
		cfg.CgroupRoot = "/sys/fs/cgroup"
	}
	s := &Sandbox{uid: uid, gid: gid, limits: cfg.Limits}
	for _, m := range append(append([]string{}, defaultMask...), cfg.Mask...) {
		if !filepath.IsAbs(m) {
			return nil, fmt.Errorf("sandbox: masked folder %q is not an absolute path", m)
		}
		s.mask = append(s.mask, filepath.Clean(m))
	}
	if s.cg, err = setupCgroups(cfg.CgroupRoot, cfg.Limits); err != nil {
		s.missing = append(s.missing, "memory and pids limits ("+err.Error()+")")
		s.limits.MemoryBytes, s.limits.Pids = 0, 0
	}
	return s, nil
}

// LookupUser resolves the account sandboxed programs run as, refusing root and nobody.
func LookupUser(name string) (uid, gid uint32, err error) {
	if name == "" || name == "nobody" || name == "root" {
		return 0, 0, fmt.Errorf("build user %q: use a dedicated account (root is root, and runners run as nobody)", name)
	}
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, fmt.Errorf("build user %q: %w (create it: useradd --system --no-create-home --shell /usr/sbin/nologin %s)", name, err, name)
	}
	id, err1 := strconv.ParseUint(u.Uid, 10, 32)
	g, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("build user %q has a non-numeric uid or gid", name)
	}
	if id == 0 || g == 0 {
		return 0, 0, fmt.Errorf("build user %q has uid or gid 0", name)
	}
	if nobody, err := user.Lookup("nobody"); err == nil && nobody.Uid == u.Uid {
		return 0, 0, fmt.Errorf("build user %q has nobody's uid, which runners use", name)
	}
	return uint32(id), uint32(g), nil
}

// UID is the user id programs run as.
func (s *Sandbox) UID() int { return int(s.uid) }

// GID is the group id programs run as.
func (s *Sandbox) GID() int { return int(s.gid) }

// Limits returns the limits in force (those whose mechanism is missing are zero).
func (s *Sandbox) Limits() Limits { return s.limits }

// Missing describes the limits that could not be put in place, for the start-up log.
func (s *Sandbox) Missing() []string { return s.missing }

// MountWorkspace mounts a tmpfs of Limits.DiskBytes over dir (an empty folder), owned by
// the sandbox user with mode 0700. It does nothing when DiskBytes is zero. The caller
// calls UnmountWorkspace.
func (s *Sandbox) MountWorkspace(dir string) error {
	if s.limits.DiskBytes <= 0 {
		return nil
	}
	opts := fmt.Sprintf("size=%d,mode=0700,uid=%d,gid=%d", s.limits.DiskBytes, s.uid, s.gid)
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mount a tmpfs over %s: %w", dir, err)
	}
	return nil
}

// UnmountWorkspace unmounts whatever is mounted over dir (its content goes with it). A dir
// with nothing mounted is fine.
func UnmountWorkspace(dir string) error {
	for range 8 {
		err := unix.Unmount(dir, unix.MNT_DETACH)
		switch {
		case err == nil:
			continue // stacked mounts: until none is left
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT), errors.Is(err, unix.EPERM):
			return nil // not a mount point (or not ours to unmount)
		default:
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
	}
	return fmt.Errorf("unmount %s: still mounted", dir)
}

// Sweep removes the cgroups of runs older than olderThan: what a killed builder left.
func (s *Sandbox) Sweep(olderThan time.Duration) int {
	return s.cg.sweep(time.Now().Add(-olderThan))
}

// SweepMounts unmounts and removes tmpfs workspaces, wherever they are, whose folder name
// starts with prefix and whose root was last changed more than olderThan ago: those of a
// builder killed mid-build, also when its work folder was another one (under Nomad, each
// allocation has its own).
func SweepMounts(prefix string, olderThan time.Duration) (removed int) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return 0
	}
	cutoff := time.Now().Add(-olderThan)
	for _, line := range strings.Split(string(b), "\n") {
		// id parent major:minor root mountpoint options... - fstype source superoptions
		f := strings.Fields(line)
		sep := -1
		for i, x := range f {
			if x == "-" {
				sep = i
				break
			}
		}
		if len(f) < 5 || sep < 0 || sep+1 >= len(f) || f[sep+1] != "tmpfs" {
			continue
		}
		dir := unescapeMountPath(f[4])
		if !strings.HasPrefix(filepath.Base(dir), prefix) {
			continue
		}
		st, err := os.Stat(dir)
		if err != nil || st.ModTime().After(cutoff) {
			continue
		}
		if UnmountWorkspace(dir) == nil && os.RemoveAll(dir) == nil {
			removed++
		}
	}
	return removed
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Cmd is one program to run in the sandbox.
type Cmd struct {
	// Name names the run's cgroups; unique among running runs (the workspace's name).
	Name string
	// Path is the program; Args its arguments (without the program name).
	Path string
	Args []string
	// Env is the program's whole environment.
	Env []string
	// Dir is the working folder.
	Dir string
	// Stdout and Stderr receive the program's output (nil: discarded).
	Stdout, Stderr io.Writer
	// Workspace is the folder the program may write (mounted by MountWorkspace). It stays
	// visible at its path even when it is under a masked folder.
	Workspace string
	// Expose lists files and folders that stay visible, read-only, at their paths even when
	// under a masked or scratch folder (npm itself, a CA file).
	Expose []string
	// Proxy is the unix socket of the egress proxy. Inside, 127.0.0.1:<port> forwards to it
	// and each variable named in ProxyEnv is set to http://127.0.0.1:<port>.
	Proxy    string
	ProxyEnv []string
}

// Result is how a run ended.
type Result struct {
	// ExitCode is the program's exit status; -1 when a signal ended it.
	ExitCode int
	// Signal is the signal that ended the program (0 when it exited).
	Signal syscall.Signal
	// OOMKilled says the kernel killed a process of the run for exceeding the memory limit.
	OOMKilled bool
	// PidsLimited says a fork of the run failed at the process limit.
	PidsLimited bool
	// PeakMemory is the most memory the run used, in bytes (0 when not measured).
	PeakMemory int64
}

// Success reports whether the program exited with status 0.
func (r Result) Success() bool { return r.ExitCode == 0 && r.Signal == 0 }

// Run runs c in the sandbox and waits for it. When ctx ends the whole run is killed and
// ctx's error is returned. Every process the program started is gone when Run returns.
func (s *Sandbox) Run(ctx context.Context, c *Cmd) (Result, error) {
	var res Result
	if c.Name == "" || strings.ContainsAny(c.Name, "/.") {
		return res, fmt.Errorf("sandbox: invalid run name %q", c.Name)
	}
	cg, err := s.cg.create(c.Name, s.limits)
	if err != nil {
		return res, fmt.Errorf("sandbox: %w", err)
	}
	defer cg.remove()
	sp := spec{
		Path: c.Path, Args: c.Args, Env: c.Env, Dir: c.Dir, UID: s.uid, GID: s.gid,
		Cgroups: cg.procFiles(), Workspace: c.Workspace, Expose: c.Expose,
		Scratch: scratchDirs, ScratchBytes: scratchBytes, Mask: s.mask,
		Proxy: c.Proxy, ProxyEnv: c.ProxyEnv,
	}
	out, err := s.start(ctx, sp, c.Stdout, c.Stderr)
	oom, pidsMax := cg.events()
	res.OOMKilled, res.PidsLimited, res.PeakMemory = oom > 0, pidsMax > 0, cg.peakMemory()
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	if err != nil {
		if res.OOMKilled {
			// The helper itself was chosen by the OOM killer; the run ended all the same.
			res.ExitCode, res.Signal = -1, syscall.SIGKILL
			return res, nil
		}
		return res, err
	}
	res.ExitCode, res.Signal = out.Exit, syscall.Signal(out.Signal)
	return res, nil
}

// start starts the helper in its namespaces, hands it the spec and returns its result.
func (s *Sandbox) start(ctx context.Context, sp spec, stdout, stderr io.Writer) (result, error) {
	var out result
	body, err := json.Marshal(sp)
	if err != nil {
		return out, err
	}
	specR, specW, err := os.Pipe()
	if err != nil {
		return out, err
	}
	resR, resW, err := os.Pipe()
	if err != nil {
		specR.Close()
		specW.Close()
		return out, err
	}
	defer resR.Close()
	cmd := exec.CommandContext(ctx, "/proc/self/exe")
	cmd.Args = []string{HelperName}
	cmd.Env = []string{} // nothing of the builder's environment, not even to the helper
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.ExtraFiles = []*os.File{specR, resW} // fds 3 and 4 in the helper
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID |
			syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS,
		// The helper is the new pid namespace's init: when it dies, the kernel kills every
		// process of the run. It dies with the builder.
		Pdeathsig: syscall.SIGKILL,
		Setpgid:   true,
	}
	// Output pipes outlive the helper only while a process of the run lives, which its
	// death ends; this is a backstop.
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Start()
	specR.Close()
	resW.Close()
	if err != nil {
		specW.Close()
		return out, fmt.Errorf("sandbox: start the helper: %w", err)
	}
	_, werr := specW.Write(body)
	specW.Close()
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(resR, 64<<10))
		got <- b
	}()
	waitErr := cmd.Wait()
	b := <-got
	if werr != nil && waitErr == nil {
		waitErr = werr
	}
	if len(bytes.TrimSpace(b)) == 0 {
		if waitErr == nil {
			waitErr = errors.New("exited without saying how the program ended (does main call sandbox.Main first?)")
		}
		return out, fmt.Errorf("sandbox helper: %w", waitErr)
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return out, fmt.Errorf("sandbox helper: bad result %q: %w", b, err)
	}
	if out.Error != "" {
		return out, fmt.Errorf("sandbox: %s", out.Error)
	}
	return out, nil
}

// Check runs a trivial program in the sandbox, so a builder that cannot build it fails at
// start rather than on every build.
func (s *Sandbox) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	name := fmt.Sprintf("check-%d-%d", os.Getpid(), time.Now().UnixNano())
	var out bytes.Buffer
	res, err := s.Run(ctx, &Cmd{Name: name, Path: "/bin/sh", Args: []string{"-c", "id -u"}, Dir: "/", Stdout: &out, Stderr: &out})
	if err != nil {
		return fmt.Errorf("sandbox self-check: %w (the builder needs root with CAP_SYS_ADMIN and a writable "+
			"/sys/fs/cgroup; in a container that means SYS_ADMIN and unconfined seccomp and AppArmor; "+
			"run it as a non-root user instead to build without a sandbox)", err)
	}
	if !res.Success() || strings.TrimSpace(out.String()) != strconv.Itoa(int(s.uid)) {
		return fmt.Errorf("sandbox self-check: /bin/sh -c 'id -u' ended with %+v and printed %q", res, out.String())
	}
	return nil
}
