// Command builder builds npm modules for fnhook: it consumes the build queue, installs each
// name@version once in a sandbox, stores the tarball in S3, records the outcome in DynamoDB
// and announces module.ready or module.failed.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/fnhook/fnhook/libs/blob"
	"github.com/fnhook/fnhook/libs/config"
	"github.com/fnhook/fnhook/libs/discovery"
	"github.com/fnhook/fnhook/libs/logging"
	"github.com/fnhook/fnhook/libs/queue"
	"github.com/fnhook/fnhook/libs/server"
	"github.com/fnhook/fnhook/libs/store"
	"github.com/fnhook/fnhook/services/builder/build"
	"github.com/fnhook/fnhook/services/builder/egress"
	"github.com/fnhook/fnhook/services/builder/npm"
	"github.com/fnhook/fnhook/services/builder/sandbox"
)

// systemCABundle is added to npm's trusted CAs when FNHOOK_NPM_CAFILE is not set and the
// file exists: harmless where it is already trusted, and needed where TLS is intercepted.
const systemCABundle = "/etc/ssl/certs/ca-certificates.crt"

func main() {
	// The builder's own binary, started again in new namespaces, sets up each build's
	// sandbox: that process must do nothing else.
	sandbox.Main()
	server.Main(run)
}

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	env := config.New(getenv)
	common := config.LoadCommon(env, "builder", "127.0.0.1:8083")
	names := common.Queues
	timeout := env.Duration("FNHOOK_BUILDER_TIMEOUT", 120*time.Second)
	retries := env.Int("FNHOOK_BUILDER_RETRIES", 3, 0, 20)
	if retries == 0 {
		retries = -1 // build.Config: negative means no retry
	}
	workDir := env.String("FNHOOK_BUILDER_WORKDIR", os.TempDir())
	caFile := env.String("FNHOOK_NPM_CAFILE", "")
	if _, err := os.Stat(systemCABundle); caFile == "" && err == nil {
		caFile = systemCABundle
	}
	tarballHosts, err := hostList(env.String("FNHOOK_NPM_TARBALL_HOSTS", ""))
	if err != nil {
		return fmt.Errorf("invalid FNHOOK_NPM_TARBALL_HOSTS: %w", err)
	}
	npmCfg := npm.Config{
		NPM:          env.String("FNHOOK_NPM_BIN", "npm"),
		Registry:     env.String("FNHOOK_NPM_REGISTRY", npm.DefaultRegistry),
		CAFile:       caFile,
		Timeout:      timeout,
		WorkDir:      workDir,
		User:         env.String("FNHOOK_BUILDER_USER", npm.DefaultUser),
		FetchRetries: env.Int("FNHOOK_NPM_FETCH_RETRIES", 2, 0, 10),
		TarballHosts: tarballHosts,
		Limits: sandbox.Limits{
			MemoryBytes: int64(env.Int("FNHOOK_BUILDER_MEMORY_MB", 1024, 64, 1<<20)) << 20,
			Pids:        env.Int("FNHOOK_BUILDER_PIDS", 512, 32, 1<<20),
			DiskBytes:   int64(env.Int("FNHOOK_BUILDER_DISK_MB", 1024, 16, 1<<20)) << 20,
		},
	}
	cfg := build.Config{
		Owner:       "builder-" + hostname() + "-" + server.NewID()[:8],
		Queue:       names.BuildQueue,
		Concurrency: env.Int("FNHOOK_BUILDER_CONCURRENCY", 2, 1, 64),
		ClaimTTL:    env.Duration("FNHOOK_BUILDER_CLAIM_TTL", timeout+30*time.Second),
		Retries:     retries,
		Backoff:     env.Duration("FNHOOK_BUILDER_BACKOFF", 2*time.Second),
		MaxBytes:    int64(env.Int("FNHOOK_BUILDER_MAX_BYTES", 200<<20, 1<<20, 4<<30)),
		Grace:       env.Duration("FNHOOK_BUILDER_GRACE", 30*time.Second),
		WorkDir:     workDir,
	}
	if err := env.Err(); err != nil {
		return err
	}
	log := logging.New(stdout, common.Service, common.LogLevel)
	srv := server.New(common.Service, log)
	npmCfg.Log, npmCfg.Metrics = log, srv.Registry
	installer, err := npm.New(npmCfg)
	if err != nil {
		return err
	}
	// Leftovers of builders killed mid-build; anything older than a build can take is dead.
	if n, err := installer.Sweep(timeout + cfg.ClaimTTL + 5*time.Minute); err != nil {
		log.Warn("could not sweep old build folders", "err", err)
	} else if n > 0 {
		log.Info("removed leftovers of old builds (folders, mounts, cgroups)", "count", n)
	}
	logSandbox(log, installer, npmCfg)
	consul, err := discovery.New(ctx, common.ConsulAddr, discovery.Token(common.ConsulToken))
	if err != nil {
		return fmt.Errorf("FNHOOK_CONSUL_ADDR: %w", err)
	}
	st, err := store.Open(ctx, store.Config{Endpoint: common.DynamoDB, Region: common.Region,
		AccessKey: common.AWSAccessKey, SecretKey: common.AWSSecretKey, Table: common.Table})
	if err != nil {
		return err
	}
	bl, err := blob.Open(ctx, blob.Config{Endpoint: common.S3Endpoint, Region: common.Region,
		AccessKey: common.AWSAccessKey, SecretKey: common.AWSSecretKey, Bucket: common.Bucket})
	if err != nil {
		return err
	}
	// The connection outlives ctx: builds finishing in the grace period still ack and publish.
	connCtx, closeConn := context.WithCancel(context.WithoutCancel(ctx))
	defer closeConn()
	conn, err := queue.Dial(connCtx, common.AMQPURL, names, log)
	if err != nil {
		return err
	}
	srv.Ready = conn.Ping
	b, err := build.New(cfg, st, bl, conn, installer, srv.Registry, log)
	if err != nil {
		return err
	}
	log.Info("builder starting", "owner", cfg.Owner, "concurrency", cfg.Concurrency, "timeout", timeout,
		"claim_ttl", cfg.ClaimTTL, "registry", npmCfg.Registry, "sandboxed", installer.Sandboxed())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(gctx, common, consul, nil) })
	g.Go(func() error { return b.Run(gctx, conn) })
	return g.Wait()
}

// hostList parses a comma-separated list of host[:port] or URLs into host:port pairs.
func hostList(s string) ([]string, error) {
	var hosts []string
	for _, h := range strings.Split(s, ",") {
		if h = strings.TrimSpace(h); h == "" {
			continue
		}
		hp, err := egress.HostPort(h)
		if err != nil {
			return nil, err
		}
		hosts = append(hosts, hp)
	}
	return hosts, nil
}

// logSandbox says at start what bounds an install, and loudly what does not.
func logSandbox(log *slog.Logger, in *npm.Installer, cfg npm.Config) {
	box := in.Sandbox()
	if box == nil {
		log.Warn("build sandbox OFF (the builder is not root): npm and install scripts run as the builder's own user, " +
			"in its network namespace, without memory, process or disk limits; only the time limit applies")
		return
	}
	lim := box.Limits()
	log.Info("build sandbox on", "user", cfg.User, "uid", box.UID(), "memory_mb", lim.MemoryBytes>>20,
		"pids", lim.Pids, "disk_mb", lim.DiskBytes>>20, "registry", cfg.Registry, "tarball_hosts", cfg.TarballHosts)
	for _, m := range box.Missing() {
		log.Warn("build limit unavailable", "limit", m)
	}
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "unknown"
	}
	return h
}
