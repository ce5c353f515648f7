// Command bench is `make bench` (fnhook#7): it measures, in one run on this machine, a
// plain Node server on the host (the floor), the same server in a bridge-mode Nomad exec
// job (the bridge floor), and the same function through the fnhook gateway, warm and
// cold, plus a node process per request and function create; then what many tenants cost
// one node (fnhook#15): a runner's memory and start CPU, a burst of new tenants, and new
// tenants each called twice. It prints a Markdown table
// on stdout, writes the raw figures with ratios and target checks as JSON, and exits
// non-zero when a measurement could not be made (a missed target is not a failure).
// Configuration is FNHOOK_BENCH_* variables (see scripts/bench.sh and docs/performance.md).
package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/fnhook/fnhook/bench/load"
	"github.com/fnhook/fnhook/bench/report"
	"github.com/fnhook/fnhook/bench/scenario"
	"github.com/fnhook/fnhook/libs/config"
	"github.com/fnhook/fnhook/libs/logging"
	"github.com/fnhook/fnhook/libs/server"
)

// floorJS is bench/floor.js, run on the host and inline in the bridge job. Embedded so the
// bench does not depend on its working directory; read-only.
//
//go:embed floor.js
var floorJS []byte

func main() { server.Main(run) }

// sections parses FNHOOK_BENCH_ONLY: a comma-separated list of report.Sections, or ""
// (every section).
func sections(v string) ([]string, error) {
	var out []string
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !slices.Contains(report.Sections, s) {
			return nil, fmt.Errorf("FNHOOK_BENCH_ONLY: %q is not one of %s", s, strings.Join(report.Sections, ","))
		}
		out = append(out, s)
	}
	return out, nil
}

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	env := config.New(getenv)
	cfg := scenario.Config{
		Gateway:             env.String("FNHOOK_BENCH_GATEWAY", "http://127.0.0.1:8080"),
		AdminKey:            env.Secret("FNHOOK_ADMIN_KEY", 16),
		HandlerMetrics:      env.String("FNHOOK_BENCH_HANDLER_METRICS", "http://127.0.0.1:8082/metrics"),
		NomadAddr:           env.String("FNHOOK_NOMAD_ADDR", "http://127.0.0.1:4646"),
		Node:                env.String("FNHOOK_BENCH_NODE", "node"),
		FloorJS:             floorJS,
		ModulesDir:          env.String("FNHOOK_MODULES_DIR", filepath.Join(getenv("HOME"), ".cache", "fnhook", "state", "modules")),
		Concurrency:         env.Int("FNHOOK_BENCH_CONCURRENCY", 16, 1, 1024),
		Warmup:              env.Duration("FNHOOK_BENCH_WARMUP", 2*time.Second),
		Duration:            env.Duration("FNHOOK_BENCH_DURATION", 10*time.Second),
		SerialDuration:      env.Duration("FNHOOK_BENCH_SERIAL_DURATION", 3*time.Second),
		ColdN:               env.Int("FNHOOK_BENCH_COLD_N", 50, 1, 10000),
		ColdNoDepsN:         env.Int("FNHOOK_BENCH_COLD_NODEPS_N", 20, 0, 10000),
		NaiveN:              env.Int("FNHOOK_BENCH_NAIVE_N", 20, 1, 10000),
		CreateN:             env.Int("FNHOOK_BENCH_CREATE_N", 20, 1, 90),
		RequireN:            env.Int("FNHOOK_BENCH_REQUIRE_N", 10, 1, 1000),
		PoolWait:            env.Duration("FNHOOK_BENCH_POOL_WAIT", 15*time.Second),
		SettleWait:          env.Duration("FNHOOK_BENCH_SETTLE_WAIT", 3*time.Minute),
		NewModuleWait:       env.Duration("FNHOOK_BENCH_NEW_MODULE_WAIT", 3*time.Minute),
		NewModuleCandidates: strings.Split(env.String("FNHOOK_BENCH_NEW_MODULES", "is-number,left-pad,is-odd,is-even,kind-of"), ","),
		TenantsN:            env.Int("FNHOOK_BENCH_TENANTS_N", 200, 0, 10000),
		TenantsTargetN:      env.Int("FNHOOK_BENCH_TENANTS_TARGET_N", 40, 0, 10000),
		TenantsConcurrency:  env.Int("FNHOOK_BENCH_TENANTS_CONCURRENCY", 8, 1, 1024),
		TenantsRoundLimit:   env.Duration("FNHOOK_BENCH_TENANTS_ROUND_LIMIT", 10*time.Minute),
		BurstN:              env.Int("FNHOOK_BENCH_BURST_N", 40, 0, 1024),
		RunnerStarts:        env.Int("FNHOOK_BENCH_RUNNER_STARTS", 8, 1, 64),
	}
	only, err := sections(env.String("FNHOOK_BENCH_ONLY", ""))
	if err != nil {
		return err
	}
	cfg.Only = only
	switch w := env.String("FNHOOK_BENCH_WRK", "auto"); w {
	case "auto":
		cfg.Wrk = load.FindWrk()
	case "off":
	default:
		cfg.Wrk = w
	}
	out := env.String("FNHOOK_BENCH_OUT", filepath.Join("bench", "results", "latest.json"))
	cpuProfile := env.String("FNHOOK_BENCH_CPUPROFILE", "")
	if err := env.Err(); err != nil {
		return err
	}
	log := logging.New(os.Stderr, "bench", "info")

	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return fmt.Errorf("FNHOOK_BENCH_CPUPROFILE: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}

	b, err := scenario.New(cfg, log)
	if err != nil {
		return err
	}
	defer b.Close()
	res, err := b.Run(ctx)
	if err != nil {
		return err
	}
	if err := res.WriteMarkdown(stdout); err != nil {
		return err
	}
	raw, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("FNHOOK_BENCH_OUT: %w", err)
	}
	if err := os.WriteFile(out, append(raw, '\n'), 0o644); err != nil {
		return fmt.Errorf("FNHOOK_BENCH_OUT: %w", err)
	}
	log.Info("results written", "file", out)
	if failed := res.Failed(); len(failed) > 0 {
		return fmt.Errorf("%d measurements failed: %s", len(failed), strings.Join(failed, "; "))
	}
	return nil
}
