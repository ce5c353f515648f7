// Command handler owns the runners of one Nomad client node: it keeps a warm pool of
// generic runners (one Nomad job each, as many as the node's memory holds), gives one to
// each tenant until it idles out or is evicted for a newer tenant, keeps the node's
// module cache, loads function code into runners, and answers the gateway's resolves.
// One handler runs per node (a Nomad system job).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	nomad "github.com/hashicorp/nomad/api"
	"golang.org/x/sync/errgroup"

	"github.com/fnhook/fnhook/libs/blob"
	"github.com/fnhook/fnhook/libs/config"
	"github.com/fnhook/fnhook/libs/discovery"
	"github.com/fnhook/fnhook/libs/logging"
	"github.com/fnhook/fnhook/libs/queue"
	"github.com/fnhook/fnhook/libs/runnerapi"
	"github.com/fnhook/fnhook/libs/server"
	"github.com/fnhook/fnhook/libs/store"
	"github.com/fnhook/fnhook/services/handler/modcache"
	"github.com/fnhook/fnhook/services/handler/pool"
	"github.com/fnhook/fnhook/services/handler/resolveapi"
	"github.com/fnhook/fnhook/services/handler/runnerjob"
	"github.com/fnhook/fnhook/services/handler/tenants"
)

func main() { server.Main(run) }

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	env := config.New(getenv)
	// FNHOOK_SERVICE_NAME lets tests register as something other than the platform's
	// fnhook-handler, so a running gateway never routes tenants to them.
	common := config.LoadCommon(env, env.String("FNHOOK_SERVICE_NAME", "handler"), "127.0.0.1:8082")
	secret := env.Secret("FNHOOK_HANDLER_SECRET", 16)
	nomadAddr := env.String("FNHOOK_NOMAD_ADDR", "http://127.0.0.1:4646")
	nomadToken := env.String("FNHOOK_NOMAD_TOKEN", "")
	nodeID := env.String("FNHOOK_NODE_ID", "")
	modulesDir := env.String("FNHOOK_MODULES_DIR", filepath.Join(getenv("HOME"), ".cache", "fnhook", "state", "modules"))
	moduleMaxMB := env.Int("FNHOOK_MODULE_MAX_MB", 1024, 1, 1<<20)
	jobFile := env.String("FNHOOK_RUNNER_JOB_FILE", "")
	jobPrefix := env.String("FNHOOK_RUNNER_JOB_PREFIX", "fnhook-runner")
	datacenters := strings.Split(env.String("FNHOOK_RUNNER_DATACENTERS", "*"), ",")
	namespace := env.String("FNHOOK_RUNNER_NAMESPACE", "default")
	memoryMB := env.Int("FNHOOK_RUNNER_MEMORY_MB", 256, 64, 1<<20)
	reserveMB := env.Int("FNHOOK_RUNNER_MEMORY_RESERVE_MB", 64, 16, 1<<20)
	cpuMHz := env.Int("FNHOOK_RUNNER_CPU_MHZ", 10, 1, 1<<20)
	// What the node keeps for what is not a runner: the platform's services reserve
	// 2048 MB and 800 MHz in Nomad (jobs/*.nomad.hcl), with room to spare.
	headroom := runnerjob.Resources{
		MemoryMB: env.Int("FNHOOK_NODE_HEADROOM_MB", 2560, 0, 1<<24),
		CPUMHz:   env.Int("FNHOOK_NODE_HEADROOM_MHZ", 1000, 0, 1<<24),
		DiskMB:   4096,
	}
	poolCfg := pool.Config{
		Secret:       secret,
		MinIdle:      env.Int("FNHOOK_POOL_MIN_IDLE", 2, 0, 1024),
		MaxRunners:   env.Int("FNHOOK_POOL_MAX_RUNNERS", 0, 0, 4096), // 0: from the node's resources
		RefillDelay:  env.Duration("FNHOOK_POOL_REFILL_DELAY", 300*time.Millisecond),
		StartTimeout: env.Duration("FNHOOK_RUNNER_START_TIMEOUT", 90*time.Second),
	}
	tenantsCfg := tenants.Config{
		IdleTimeout: env.Duration("FNHOOK_IDLE_TIMEOUT", 10*time.Minute),
		AssignWait:  env.Duration("FNHOOK_ASSIGN_WAIT", 20*time.Second),
	}
	if err := env.Err(); err != nil {
		return err
	}
	log := logging.New(stdout, common.Service, common.LogLevel)

	consul, err := discovery.New(ctx, common.ConsulAddr, discovery.Token(common.ConsulToken))
	if err != nil {
		return fmt.Errorf("FNHOOK_CONSUL_ADDR: %w", err)
	}
	db, err := store.Open(ctx, store.Config{Endpoint: common.DynamoDB, Region: common.Region,
		AccessKey: common.AWSAccessKey, SecretKey: common.AWSSecretKey, Table: common.Table})
	if err != nil {
		return fmt.Errorf("FNHOOK_DYNAMODB_ENDPOINT: %w", err)
	}
	blobs, err := blob.Open(ctx, blob.Config{Endpoint: common.S3Endpoint, Region: common.Region,
		AccessKey: common.AWSAccessKey, SecretKey: common.AWSSecretKey, Bucket: common.Bucket})
	if err != nil {
		return fmt.Errorf("FNHOOK_S3_ENDPOINT: %w", err)
	}
	nc, err := nomad.NewClient(&nomad.Config{Address: nomadAddr, SecretID: nomadToken})
	if err != nil {
		return fmt.Errorf("FNHOOK_NOMAD_ADDR: %w", err)
	}
	// Every call of this client (jobs, allocations, the event stream) is about runner jobs.
	nc.SetNamespace(namespace)
	if nodeID == "" {
		if nodeID, err = runnerjob.NodeID(ctx, nc); err != nil {
			return fmt.Errorf("FNHOOK_NODE_ID: %w", err)
		}
	}
	if jobFile == "" {
		if jobFile, err = runnerjob.FindTemplate(); err != nil {
			return err
		}
	}
	template, err := os.ReadFile(jobFile)
	if err != nil {
		return fmt.Errorf("FNHOOK_RUNNER_JOB_FILE: %w", err)
	}

	srv := server.New(common.Service, log)
	jobs, err := runnerjob.New(ctx, nc, runnerjob.Config{
		Template: string(template), Prefix: jobPrefix, NodeID: nodeID, Datacenters: datacenters, Namespace: namespace,
		SizeClass: "default", MemoryMB: memoryMB, MemoryReserveMB: reserveMB, HeapMB: max(16, memoryMB/2), CPUMHz: cpuMHz,
	}, log)
	if err != nil {
		return fmt.Errorf("FNHOOK_RUNNER_JOB_FILE %s: %w", jobFile, err)
	}
	if err := sizePool(ctx, &poolCfg, nc, nodeID, headroom, jobs.Reservation(), log); err != nil {
		return err
	}
	cache, err := modcache.New(modulesDir, blobs, db, modcache.Limits{MaxBytes: int64(moduleMaxMB) << 20, MaxEntries: 200000}, log, srv.Registry)
	if err != nil {
		return fmt.Errorf("FNHOOK_MODULES_DIR: %w", err)
	}
	runners := runnerapi.New(nil)
	runnerPool := pool.New(poolCfg, jobs, runners, log, srv.Registry)
	existing, err := jobs.List(ctx)
	if err != nil {
		return fmt.Errorf("FNHOOK_NOMAD_ADDR: %w", err)
	}
	runnerPool.Recover(existing)
	table := tenants.New(tenantsCfg, db, cache, runnerPool, runners, log, srv.Registry)

	q, err := queue.Dial(ctx, common.AMQPURL, common.Queues, log)
	if err != nil {
		return fmt.Errorf("FNHOOK_AMQP_URL: %w", err)
	}
	defer q.Close()

	srv.Ready = func(ctx context.Context) error {
		return errors.Join(runnerPool.Ready(), q.Ping(ctx))
	}
	// A pool that cannot start runners still serves the tenants it has: degraded, not down.
	srv.Degraded = runnerPool.Degraded
	resolveapi.Mount(srv.Echo, table, secret)
	log.Info("handler starting", "node", nodeID, "job_prefix", jobs.JobPrefix(), "modules_dir", modulesDir,
		"job_file", jobFile, "min_idle", poolCfg.MinIdle, "max_runners", poolCfg.MaxRunners, "recovered", len(existing))

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { runnerPool.Run(gctx, table); return nil })
	g.Go(func() error { table.Run(gctx); return nil })
	g.Go(func() error { jobs.Watch(gctx, runnerPool.Observe, runnerPool.Resync); return nil })
	g.Go(func() error { return table.Consume(gctx, q) })
	g.Go(func() error { return srv.Serve(gctx, common, consul, map[string]string{"node": nodeID}) })
	return g.Wait()
}

// sizePool sets the pool's capacity: FNHOOK_POOL_MAX_RUNNERS when the operator set it,
// else what the node can allocate (as Nomad reports it) less the headroom, divided by
// what one runner reserves (pool.Capacity). Either way the number and its source are
// logged.
func sizePool(ctx context.Context, cfg *pool.Config, nc *nomad.Client, nodeID string, headroom, perRunner runnerjob.Resources, log *slog.Logger) error {
	if cfg.MaxRunners > 0 {
		log.Info("runner capacity", "max_runners", cfg.MaxRunners, "source", "FNHOOK_POOL_MAX_RUNNERS",
			"runner_memory_reserve_mb", perRunner.MemoryMB, "runner_cpu_mhz", perRunner.CPUMHz)
		return nil
	}
	node, err := runnerjob.Allocatable(ctx, nc, nodeID)
	if err != nil {
		return fmt.Errorf("FNHOOK_POOL_MAX_RUNNERS is not set and the node's resources are unknown (set it, or give the handler's Nomad token node:read): %w", err)
	}
	n, bound := pool.Capacity(node, headroom, perRunner)
	if n < 1 {
		return fmt.Errorf("FNHOOK_POOL_MAX_RUNNERS is not set and node %s holds no runner: %d MB and %d MHz allocatable, %d MB and %d MHz kept for the services (FNHOOK_NODE_HEADROOM_MB, _MHZ), %d MB and %d MHz per runner",
			nodeID, node.MemoryMB, node.CPUMHz, headroom.MemoryMB, headroom.CPUMHz, perRunner.MemoryMB, perRunner.CPUMHz)
	}
	cfg.MaxRunners = n
	log.Info("runner capacity", "max_runners", n, "source", "node", "bound_by", bound,
		"node_memory_mb", node.MemoryMB, "node_cpu_mhz", node.CPUMHz, "node_disk_mb", node.DiskMB,
		"headroom_memory_mb", headroom.MemoryMB, "headroom_cpu_mhz", headroom.CPUMHz,
		"runner_memory_reserve_mb", perRunner.MemoryMB, "runner_cpu_mhz", perRunner.CPUMHz, "runner_disk_mb", perRunner.DiskMB,
		"cap", pool.CapacityCap)
	return nil
}
