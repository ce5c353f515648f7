package scenario

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/fnhook/fnhook/bench/bridge"
	"github.com/fnhook/fnhook/bench/platform"
	"github.com/fnhook/fnhook/bench/report"
)

// floor runs floor.js on the host, one process, and loads it.
func (b *Bench) floor(ctx context.Context) report.Server {
	cmd, port, err := b.startFloor(ctx)
	if err != nil {
		return report.Server{Error: err.Error()}
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}()
	s := report.Server{URL: "http://127.0.0.1:" + strconv.Itoa(port) + "/"}
	b.measure(ctx, &s, nil)
	return s
}

// startFloor starts `node floor.js` on a free port and returns once it listens.
func (b *Bench) startFloor(ctx context.Context) (*exec.Cmd, int, error) {
	cmd := exec.Command(b.cfg.Node, b.dir+"/floor.js")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "FNHOOK_BENCH_PORT=0", "FNHOOK_BENCH_FUNCTION=" + PlainCode}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, 0, err
	}
	if err := cmd.Start(); err != nil {
		return nil, 0, fmt.Errorf("start node floor.js: %w", err)
	}
	type listening struct {
		port int
		err  error
	}
	ch := make(chan listening, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if !sc.Scan() {
			ch <- listening{err: fmt.Errorf("node floor.js exited before listening: %v", sc.Err())}
			return
		}
		var l struct{ Port int }
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil || l.Port == 0 {
			ch <- listening{err: fmt.Errorf("node floor.js printed %q, not its port", sc.Text())}
			return
		}
		ch <- listening{port: l.Port}
		for sc.Scan() { // keep the pipe drained
		}
	}()
	select {
	case l := <-ch:
		if l.err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			return nil, 0, l.err
		}
		return cmd, l.port, nil
	case <-time.After(10 * time.Second):
	case <-ctx.Done():
	}
	cmd.Process.Kill()
	cmd.Wait()
	return nil, 0, fmt.Errorf("node floor.js did not listen within 10 s")
}

// bridgeFloor runs floor.js inline in a bridge-mode exec job, like a runner, loads it
// through its mapped port, and stops and purges the job.
func (b *Bench) bridgeFloor(ctx context.Context) report.Server {
	sctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	job, err := bridge.Start(sctx, b.cfg.NomadAddr, bridge.Spec{
		JobID:    "fnhook-bench-floor-" + b.prefix[len("bench-"):],
		Source:   string(b.cfg.FloorJS),
		Env:      map[string]string{"FNHOOK_BENCH_FUNCTION": PlainCode},
		CPUMHz:   100, // the runner's default size class
		MemoryMB: 256,
	})
	if err != nil {
		return report.Server{Error: err.Error()}
	}
	s := report.Server{URL: job.URL}
	b.measure(ctx, &s, nil)
	stopCtx, cancelStop := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
	defer cancelStop()
	if err := job.Stop(stopCtx); err != nil {
		s.Error = joinErr(s.Error, err.Error())
	}
	return s
}

// warm deploys the plain function to a tenant, calls it once (assignment, load), loads it
// through the gateway, reading what the gateway and the tenant's runner use per call, and
// deletes the tenant.
func (b *Bench) warm(ctx context.Context) report.Server {
	t := b.tenant("warm")
	if err := b.deploy(ctx, t, "hello", platform.FunctionBody{Code: PlainCode}); err != nil {
		return report.Server{Error: err.Error()}
	}
	defer func() {
		if err := b.deleteTenant(ctx, t); err != nil {
			b.log.Warn("delete the warm tenant", "err", err)
		}
	}()
	if err := b.firstCall(ctx, t, "hello"); err != nil {
		return report.Server{Error: err.Error()}
	}
	s := report.Server{URL: b.api.RunURL(t, "hello")}
	probe, err := b.newCostProbe()
	if err != nil {
		b.log.Warn("no CPU and context switches per call", "err", err)
	}
	b.measure(ctx, &s, probe)
	if err != nil && s.Go != nil {
		s.Go.Cost = &report.Cost{Calls: s.Go.Requests, Error: err.Error()}
	}
	return s
}
