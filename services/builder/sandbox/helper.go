package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fnhook/fnhook/services/builder/egress"
)

// HelperName is argv[0] of the sandbox helper process.
const HelperName = "fnhook-sandbox-helper"

// Main turns this process into the sandbox helper and exits when it was started as one;
// otherwise it returns at once. Call it first thing in main, and in TestMain of every
// package whose tests run a sandbox.
func Main() {
	if len(os.Args) == 0 || os.Args[0] != HelperName {
		return
	}
	os.Exit(helperMain())
}

// spec is what the builder tells the helper (as JSON on fd 3).
type spec struct {
	Path         string
	Args         []string
	Env          []string
	Dir          string
	UID, GID     uint32
	Cgroups      []string // cgroup.procs files to join
	Workspace    string
	Expose       []string
	Scratch      []string
	ScratchBytes int64
	Mask         []string
	Proxy        string
	ProxyEnv     []string
}

// result is what the helper answers (as JSON on fd 4).
type result struct {
	Exit   int
	Signal int
	Error  string
}

func helperMain() int {
	// fds 3 and 4 came without close-on-exec; the program must not inherit them.
	syscall.CloseOnExec(3)
	syscall.CloseOnExec(4)
	resW := os.NewFile(4, "result")
	answer := func(r result) int {
		b, _ := json.Marshal(r)
		_, _ = resW.Write(b)
		_ = resW.Close()
		return 0
	}
	var sp spec
	if err := json.NewDecoder(io.LimitReader(os.NewFile(3, "spec"), 1<<20)).Decode(&sp); err != nil {
		return answer(result{Error: "read the spec: " + err.Error()})
	}
	// Everything below that a child inherits (no_new_privs, the parent-death signal) is
	// per thread: the program is started from this one.
	runtime.LockOSThread()
	exit, sig, err := runHelper(&sp)
	if err != nil {
		return answer(result{Error: err.Error()})
	}
	return answer(result{Exit: exit, Signal: sig})
}

func runHelper(sp *spec) (exit, sig int, err error) {
	if os.Getpid() != 1 {
		return 0, 0, errors.New("the helper is not the init of a new pid namespace")
	}
	// Joined before anything is started, so every process of the run is in them.
	for _, f := range sp.Cgroups {
		if err := os.WriteFile(f, []byte("0"), 0); err != nil {
			return 0, 0, fmt.Errorf("join cgroup %s: %w", filepath.Dir(f), err)
		}
	}
	syscall.Umask(0o022)
	proxyPath, err := setupMounts(sp)
	if err != nil {
		return 0, 0, err
	}
	if err := unix.Sethostname([]byte("fnhook-build")); err != nil {
		return 0, 0, fmt.Errorf("set the hostname: %w", err)
	}
	if err := loopbackUp(); err != nil {
		return 0, 0, err
	}
	env := append([]string{}, sp.Env...)
	if proxyPath != "" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, 0, fmt.Errorf("listen on loopback: %w", err)
		}
		defer ln.Close()
		go forward(ln, proxyPath)
		for _, k := range sp.ProxyEnv {
			env = append(env, k+"=http://"+ln.Addr().String())
		}
	}
	// Setuid programs (and file capabilities) must not raise a process of the run above
	// the build user.
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return 0, 0, fmt.Errorf("set no_new_privs: %w", err)
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return 0, 0, err
	}
	p, err := os.StartProcess(sp.Path, append([]string{sp.Path}, sp.Args...), &os.ProcAttr{
		Dir:   sp.Dir,
		Env:   env,
		Files: []*os.File{devnull, os.Stdout, os.Stderr},
		Sys: &syscall.SysProcAttr{
			// No supplementary group of root's is kept.
			Credential: &syscall.Credential{Uid: sp.UID, Gid: sp.GID, Groups: []uint32{}},
			Setpgid:    true,
			Pdeathsig:  syscall.SIGKILL,
		},
	})
	devnull.Close()
	if err != nil {
		return 0, 0, fmt.Errorf("start %s: %w", sp.Path, err)
	}
	// As init, the helper reaps every orphan of the run until the program itself ends,
	// then kills what is left (daemons an install script left behind) and reaps them.
	exit, sig = -1, 0
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return 0, 0, fmt.Errorf("wait for %s: %w", sp.Path, err)
		}
		if pid == p.Pid {
			if ws.Signaled() {
				sig = int(ws.Signal())
			} else {
				exit = ws.ExitStatus()
			}
			break
		}
	}
	_ = syscall.Kill(-1, syscall.SIGKILL)
	for {
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(-1, &ws, 0, nil); errors.Is(err, syscall.EINTR) {
			continue
		} else if err != nil {
			break
		}
	}
	return exit, sig, nil
}

// setupMounts gives the run its own view of the file system: a private mount table, /proc
// of the new pid namespace, fresh size-limited scratch folders, masked folders, and the
// workspace and exposed paths at their own paths. It returns the path through which the
// proxy socket stays reachable ("" when there is none).
func setupMounts(sp *spec) (string, error) {
	// Nothing mounted here may propagate to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return "", fmt.Errorf("make the mounts private: %w", err)
	}
	// Hold on to what must stay reachable before the folders around it are covered.
	type held struct {
		path string
		fd   int
		dir  bool
		ro   bool
	}
	var keep []held
	defer func() {
		for _, k := range keep {
			unix.Close(k.fd)
		}
	}()
	open := func(path string, ro bool) error {
		fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return err
		}
		keep = append(keep, held{path: path, fd: fd, dir: st.Mode&unix.S_IFMT == unix.S_IFDIR, ro: ro})
		return nil
	}
	if sp.Workspace != "" {
		if err := open(sp.Workspace, false); err != nil {
			return "", fmt.Errorf("open the workspace: %w", err)
		}
	}
	for _, e := range sp.Expose {
		if err := open(e, true); err != nil && !errors.Is(err, unix.ENOENT) {
			return "", fmt.Errorf("open %s: %w", e, err)
		}
	}
	proxyFD := -1
	if sp.Proxy != "" {
		fd, err := unix.Open(sp.Proxy, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", fmt.Errorf("open the proxy socket: %w", err)
		}
		proxyFD = fd
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return "", fmt.Errorf("mount /proc: %w", err)
	}
	// POSIX message queues of the new IPC namespace, not the host's.
	if st, err := os.Lstat("/dev/mqueue"); err == nil && st.IsDir() {
		if err := unix.Mount("mqueue", "/dev/mqueue", "mqueue", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return "", fmt.Errorf("mount /dev/mqueue: %w", err)
		}
	}
	type cover struct {
		dir, opts string
	}
	var covers []cover
	for _, d := range sp.Scratch {
		covers = append(covers, cover{d, fmt.Sprintf("size=%d,mode=1777", sp.ScratchBytes)})
	}
	for _, d := range sp.Mask {
		covers = append(covers, cover{d, "size=1m,mode=0755"})
	}
	// Parents first; a folder under one already covered is gone anyway.
	sort.Slice(covers, func(i, j int) bool { return len(covers[i].dir) < len(covers[j].dir) })
	var covered []string
	for _, c := range covers {
		if under(c.dir, covered) {
			continue
		}
		if st, err := os.Lstat(c.dir); err != nil || !st.IsDir() {
			continue // missing, or a symlink (/var/run -> /run)
		}
		if err := unix.Mount("tmpfs", c.dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, c.opts); err != nil {
			return "", fmt.Errorf("mount a tmpfs over %s: %w", c.dir, err)
		}
		covered = append(covered, c.dir)
	}
	// Outer paths first, so an inner one is bound on top.
	sort.Slice(keep, func(i, j int) bool { return len(keep[i].path) < len(keep[j].path) })
	for _, k := range keep {
		if !under(k.path, covered) {
			continue
		}
		if k.ro && reveals(k.path, covered) {
			continue // exposing it would show what is hidden (e.g. npm configured in /tmp itself)
		}
		if err := os.MkdirAll(filepath.Dir(k.path), 0o755); err != nil {
			return "", err
		}
		if k.dir {
			if err := os.Mkdir(k.path, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				return "", err
			}
		} else if err := os.WriteFile(k.path, nil, 0o644); err != nil {
			return "", err
		}
		src := "/proc/self/fd/" + strconv.Itoa(k.fd)
		if err := unix.Mount(src, k.path, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return "", fmt.Errorf("keep %s visible: %w", k.path, err)
		}
		if k.ro {
			flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV)
			if err := unix.Mount("", k.path, "", flags, ""); err != nil {
				return "", fmt.Errorf("make %s read-only: %w", k.path, err)
			}
		}
	}
	if proxyFD < 0 {
		return "", nil
	}
	// A unix socket is reached through the path of a descriptor held on it, whatever
	// now covers its folder.
	return "/proc/self/fd/" + strconv.Itoa(proxyFD), nil
}

// reveals reports whether path is one of dirs or holds one.
func reveals(path string, dirs []string) bool {
	for _, d := range dirs {
		if under(d, []string{path}) {
			return true
		}
	}
	return false
}

// under reports whether path is one of dirs or inside one.
func under(path string, dirs []string) bool {
	for _, d := range dirs {
		if path == d || strings.HasPrefix(path, d+"/") {
			return true
		}
	}
	return false
}

// loopbackUp brings up lo, the only interface of a new network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	return nil
}

// forwardIdle closes a forwarded connection that carried nothing for this long (the proxy
// has its own, shorter or equal, limit).
const forwardIdle = 5 * time.Minute

// maxForwards bounds the connections forwarded at once; the proxy bounds them again.
const maxForwards = 256

// forward hands every connection accepted on ln to the proxy socket at path.
func forward(ln net.Listener, path string) {
	slots := make(chan struct{}, maxForwards)
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		select {
		case slots <- struct{}{}:
		default:
			c.Close()
			continue
		}
		go func() {
			defer func() { <-slots }()
			up, err := net.DialTimeout("unix", path, 10*time.Second)
			if err != nil {
				c.Close()
				return
			}
			egress.Pipe(c, up, forwardIdle)
		}()
	}
}
