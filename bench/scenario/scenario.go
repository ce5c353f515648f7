// Package scenario runs the measurements of `make bench` against the real platform, in a
// fixed order, and gathers them into a report.Results: the floors, warm load, cold calls,
// naive cold, function create, then what many tenants cost one node (runner memory and
// start CPU, a burst of new tenants, tenants each called twice).
package scenario

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fnhook/fnhook/bench/load"
	"github.com/fnhook/fnhook/bench/platform"
	"github.com/fnhook/fnhook/bench/proc"
	"github.com/fnhook/fnhook/bench/report"
	fnhook "github.com/fnhook/fnhook/libs"
)

// The benchmark's functions. PlainCode is also floor.js's default function: the floors
// and the platform run the very same body.
const (
	PlainCode = `module.exports = async (ctx) => ({ body: { ok: true, path: ctx.path } });`
	DepsCode  = `const dayjs = require("dayjs");
module.exports = async (ctx) => ({ body: { ok: true, path: ctx.path, epoch: dayjs(0).toISOString() } });`
	// DepsModule and DepsRange are the cold function's dependency: small, CommonJS, built once.
	DepsModule = "dayjs"
	DepsRange  = "^1.11.0"
)

// Config is what a run needs; cmd wiring fills it from FNHOOK_BENCH_* variables.
type Config struct {
	Gateway        string // e.g. http://127.0.0.1:8080
	AdminKey       string
	HandlerMetrics string // e.g. http://127.0.0.1:8082/metrics
	NomadAddr      string
	Node           string // the node binary
	FloorJS        []byte // the source of bench/floor.js
	ModulesDir     string // the node's module cache, for the require measurement
	Wrk            string // the wrk binary, "" to skip wrk

	Concurrency int
	Warmup      time.Duration
	Duration    time.Duration
	// SerialDuration is how long each server is also measured one request at a time (0: not).
	SerialDuration time.Duration
	ColdN          int // fresh tenants with the dayjs function
	ColdNoDepsN    int // fresh tenants with the function without dependencies
	NaiveN         int
	CreateN        int
	RequireN       int
	PoolWait       time.Duration // longest wait for an idle runner before a cold call
	SettleWait     time.Duration // longest wait for a function to be ready
	NewModuleWait  time.Duration // longest wait for a new module's build
	// NewModuleCandidates are npm packages whose versions are tried, in order, for the
	// create of a function that needs a module nobody built.
	NewModuleCandidates []string

	// TenantsN and TenantsTargetN are the tenant runs (0 skips one): new tenants each
	// called twice, TenantsConcurrency at a time; the target run is the check.
	TenantsN, TenantsTargetN int
	TenantsConcurrency       int
	// TenantsRoundLimit bounds a round: calls not started by then are not sent.
	TenantsRoundLimit time.Duration
	BurstN            int // new tenants whose first calls are sent at once (0: skip)
	RunnerStarts      int // runner starts the start CPU is measured over
	// Only lists the sections to run (report.Sections); empty runs all.
	Only []string
}

// Bench is one run.
type Bench struct {
	cfg    Config
	log    *slog.Logger
	api    *platform.Client
	prefix string
	dir    string  // temp dir holding floor.js
	proc   proc.FS // this host's /proc, where the runners' processes are read

	mu      sync.Mutex
	tenants map[string]bool // created and not deleted yet
}

// New prepares a run: a unique tenant prefix and floor.js written to a temporary folder.
// Close removes what the run left.
func New(cfg Config, log *slog.Logger) (*Bench, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "fnhook-bench-")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(dir+"/floor.js", cfg.FloorJS, 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &Bench{
		cfg: cfg, log: log,
		api:     platform.New(cfg.Gateway, cfg.AdminKey, cfg.HandlerMetrics),
		prefix:  "bench-" + hex.EncodeToString(b[:]),
		proc:    proc.HostFS(),
		dir:     dir,
		tenants: map[string]bool{},
	}, nil
}

// Run measures everything and returns the results with ratios and targets computed. An
// error means the platform could not be used at all; sections that fail on their own are
// recorded in the results and the run goes on.
func (b *Bench) Run(ctx context.Context) (report.Results, error) {
	start := time.Now()
	r := report.Results{
		StartedAt: start,
		Host:      report.Host{CPUs: runtime.NumCPU(), Go: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH, Node: b.nodeVersion(ctx)},
		Settings: report.Settings{
			Concurrency: b.cfg.Concurrency, WarmupS: b.cfg.Warmup.Seconds(), DurationS: b.cfg.Duration.Seconds(),
			ColdN: b.cfg.ColdN, NaiveN: b.cfg.NaiveN, CreateN: b.cfg.CreateN, Gateway: b.cfg.Gateway,
			Only: b.cfg.Only, TenantsN: b.cfg.TenantsN, TenantsTargetN: b.cfg.TenantsTargetN,
			TenantsConcurrency: b.cfg.TenantsConcurrency, BurstN: b.cfg.BurstN, RunnerStarts: b.cfg.RunnerStarts,
		},
	}
	if err := b.preflight(ctx); err != nil {
		return r, err
	}
	defer b.cleanup(ctx)

	if r.Ran(report.SectionFloor) {
		b.log.Info("floor: node on the host")
		r.Floor = b.floor(ctx)
	}
	if r.Ran(report.SectionBridge) {
		b.log.Info("bridge floor: node in a bridge-mode exec job")
		r.BridgeFloor = b.bridgeFloor(ctx)
	}
	if r.Ran(report.SectionWarm) {
		b.log.Info("warm: through the gateway")
		r.Warm = b.warm(ctx)
	}
	if r.Ran(report.SectionCold) {
		b.log.Info("cold: fresh tenants", "n", b.cfg.ColdN, "no_deps_n", b.cfg.ColdNoDepsN)
		r.Cold, r.RequireModule, r.RequireMs = b.cold(ctx)
	}
	if r.Ran(report.SectionNaive) {
		b.log.Info("naive cold: node per request", "n", b.cfg.NaiveN)
		r.Naive = b.naive(ctx)
	}
	if r.Ran(report.SectionCreate) {
		b.log.Info("function create", "n", b.cfg.CreateN)
		r.Create = b.create(ctx)
	}
	b.manyTenants(ctx, &r)
	if err := ctx.Err(); err != nil {
		return r, fmt.Errorf("bench interrupted: %w", err)
	}
	r.Seconds = time.Since(start).Seconds()
	r.Compute()
	return r, nil
}

// manyTenants measures what many tenants cost one node (fnhook#15): a runner's memory
// and start CPU, a burst of new tenants, and the tenant runs. They come last: each starts
// many runners, which would disturb the measurements above.
func (b *Bench) manyTenants(ctx context.Context, r *report.Results) {
	nc, err := nomadClient(b.cfg.NomadAddr)
	if err != nil {
		b.log.Warn("no Nomad client: no waiting for Nomad to be quiet, no runner start CPU", "err", err)
		nc = nil
	}
	if r.Ran(report.SectionRunner) && ctx.Err() == nil {
		b.log.Info("runner cost: memory and start CPU", "starts", b.cfg.RunnerStarts)
		r.Runners = b.runnerCost(ctx, nc)
	}
	if r.Ran(report.SectionBurst) && b.cfg.BurstN > 0 && ctx.Err() == nil {
		b.log.Info("burst: new tenants all at once", "n", b.cfg.BurstN)
		r.Burst = b.burst(ctx, nc, b.cfg.BurstN)
	}
	if !r.Ran(report.SectionTenants) {
		return
	}
	if n := b.cfg.TenantsTargetN; n > 0 && ctx.Err() == nil {
		b.log.Info("tenants: the target run", "n", n, "concurrency", b.cfg.TenantsConcurrency)
		r.Tenants = append(r.Tenants, b.tenantsRun(ctx, nc, n, b.cfg.TenantsConcurrency, true))
	}
	if n := b.cfg.TenantsN; n > 0 && ctx.Err() == nil {
		b.log.Info("tenants: the large run", "n", n, "concurrency", b.cfg.TenantsConcurrency)
		r.Tenants = append(r.Tenants, b.tenantsRun(ctx, nc, n, b.cfg.TenantsConcurrency, false))
	}
}

// Close removes the temporary folder.
func (b *Bench) Close() error { return os.RemoveAll(b.dir) }

// preflight checks that the gateway answers and the admin key works.
func (b *Bench) preflight(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(b.cfg.Gateway, "/")+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("the gateway does not answer at %s (is the suite up? scripts/deploy.sh): %w", b.cfg.Gateway, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the gateway's /healthz answers %d", resp.StatusCode)
	}
	b.removeLeftovers(ctx)
	t := b.tenant("preflight")
	if err := b.putTenant(ctx, t); err != nil {
		return fmt.Errorf("create a tenant through the gateway: %w", err)
	}
	return b.deleteTenant(ctx, t)
}

// leftover matches the tenants of an earlier, interrupted run: bench-<8 hex>-...
var leftover = regexp.MustCompile(`^bench-[0-9a-f]{8}-`)

// removeLeftovers deletes the tenants an interrupted run left: each holds a runner, and
// the pool's runners are bounded.
func (b *Bench) removeLeftovers(ctx context.Context) {
	names, err := b.api.Tenants(ctx)
	if err != nil {
		b.log.Warn("list tenants", "err", err)
		return
	}
	for _, t := range names {
		if leftover.MatchString(t) && !strings.HasPrefix(t, b.prefix) {
			b.log.Info("deleting a tenant left by an earlier run", "tenant", t)
			if err := b.api.DeleteTenant(ctx, t); err != nil {
				b.log.Warn("delete a leftover tenant", "tenant", t, "err", err)
			}
		}
	}
}

// tenant names a tenant of this run.
func (b *Bench) tenant(suffix string) string { return b.prefix + "-" + suffix }

func (b *Bench) putTenant(ctx context.Context, t string) error {
	b.mu.Lock()
	b.tenants[t] = true
	b.mu.Unlock()
	return retryUnavailable(ctx, func() error { return b.api.PutTenant(ctx, t) })
}

// retryUnavailable runs call again, a second apart, while it fails with 503 (up to 4
// more times: the management API answers that when a dependency such as the npm registry
// or the syntax checker is slow for a moment, and says to retry) or with a refused
// connection (up to 30 more times: the gateway is being redeployed).
func retryUnavailable(ctx context.Context, call func() error) error {
	for attempt := 0; ; attempt++ {
		err := call()
		var ae *platform.APIError
		busy := errors.As(err, &ae) && ae.Status == http.StatusServiceUnavailable && attempt < 4
		restarting := errors.Is(err, syscall.ECONNREFUSED) && attempt < 30
		if err == nil || !(busy || restarting) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Second):
		}
	}
}

func (b *Bench) deleteTenant(ctx context.Context, t string) error {
	if err := b.api.DeleteTenant(ctx, t); err != nil {
		return err
	}
	b.mu.Lock()
	delete(b.tenants, t)
	b.mu.Unlock()
	return nil
}

// cleanup deletes every tenant the run created and did not delete, even when ctx ended.
func (b *Bench) cleanup(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
	defer cancel()
	b.mu.Lock()
	left := make([]string, 0, len(b.tenants))
	for t := range b.tenants {
		left = append(left, t)
	}
	b.mu.Unlock()
	for _, t := range left {
		if err := b.deleteTenant(ctx, t); err != nil {
			b.log.Warn("could not delete a bench tenant", "tenant", t, "err", err)
		}
	}
}

// deploy creates tenant t with one function and waits until it is ready.
func (b *Bench) deploy(ctx context.Context, t, fn string, body platform.FunctionBody) error {
	if err := b.putTenant(ctx, t); err != nil {
		return err
	}
	var f fnhook.Function
	err := retryUnavailable(ctx, func() (err error) {
		f, err = b.api.PutFunction(ctx, t, fn, body)
		return err
	})
	if err != nil {
		return err
	}
	if f.Status != "ready" {
		wctx, cancel := context.WithTimeout(ctx, b.cfg.SettleWait)
		defer cancel()
		if f, err = b.api.WaitSettled(wctx, t, fn, 50*time.Millisecond); err != nil {
			return err
		}
		if f.Status != "ready" {
			return fmt.Errorf("function %s/%s is %s: %s", t, fn, f.Status, f.Error)
		}
	}
	return nil
}

// firstCall calls a function until it answers 200, for up to a minute: the first call of
// a tenant may meet an empty pool that is still filling.
func (b *Bench) firstCall(ctx context.Context, t, fn string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		c, err := b.api.Run(ctx, t, fn)
		if err == nil && c.Status == http.StatusOK {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("run %s/%s: status %d: %.300s", t, fn, c.Status, c.Body)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		b.log.Info("first call failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// measure loads url with the Go generator, then with wrk when installed. Both are pinned
// to core load.LoadCPU. With a probe, each load's cost per call is read from /proc over
// its measured window.
func (b *Bench) measure(ctx context.Context, s *report.Server, probe *costProbe) {
	restore, err := load.Pin(load.LoadCPU)
	if err != nil {
		s.Error = err.Error()
		return
	}
	l, err := b.closed(ctx, load.Closed{Concurrency: b.cfg.Concurrency, Warmup: b.cfg.Warmup, Duration: b.cfg.Duration}, s.URL, probe)
	if err != nil {
		restore()
		s.Error = err.Error()
		return
	}
	s.Go = &l
	if l.Errors > 0 {
		s.Error = fmt.Sprintf("%d of %d requests failed, first: %s", l.Errors, l.Requests, l.FirstError)
	}
	if b.cfg.SerialDuration > 0 {
		sl, err := b.closed(ctx, load.Closed{Concurrency: 1, Warmup: 200 * time.Millisecond, Duration: b.cfg.SerialDuration}, s.URL, probe)
		if err != nil {
			restore()
			s.Error = joinErr(s.Error, err.Error())
			return
		}
		sl.Tool = "go-serial"
		s.Serial = &sl
	}
	restore() // wrk is a process of its own, pinned by taskset
	if b.cfg.Wrk == "" {
		return
	}
	var r0 reading
	if probe != nil {
		r0 = probe.read()
	}
	w, err := load.Wrk{Path: b.cfg.Wrk, CPU: load.LoadCPU, Concurrency: b.cfg.Concurrency, Duration: b.cfg.Duration}.Run(ctx, s.URL)
	if err != nil {
		s.Error = joinErr(s.Error, err.Error())
		return
	}
	if probe != nil {
		w.Cost = probe.cost(r0, probe.read(), w.Requests)
	}
	s.Wrk = &w
}

// closed runs c on url and, with a probe, reads the cost per call over its window.
func (b *Bench) closed(ctx context.Context, c load.Closed, url string, probe *costProbe) (report.Load, error) {
	var (
		r0, r1     reading
		start, end bool
	)
	if probe != nil {
		c.OnWindow = func(last bool) {
			if last {
				r1, end = probe.read(), true
			} else {
				r0, start = probe.read(), true
			}
		}
	}
	l, err := c.Run(ctx, url)
	if err != nil || probe == nil {
		return l, err
	}
	if start && end {
		l.Cost = probe.cost(r0, r1, l.Requests)
	} else {
		l.Cost = &report.Cost{Calls: l.Requests, Error: "the window's edges were not read"}
	}
	return l, nil
}

// joinErr appends msg to the error text prev.
func joinErr(prev, msg string) string {
	if prev == "" {
		return msg
	}
	return prev + "; " + msg
}

func (b *Bench) nodeVersion(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, b.cfg.Node, "--version").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}
