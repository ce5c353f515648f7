// Command builder builds npm modules for fnhook: it consumes the build queue, installs each
// name@version once in a sandbox, stores the tarball in S3, records the outcome in DynamoDB
// and announces module.ready or module.failed.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
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
	"github.com/fnhook/fnhook/services/builder/npm"
)

// systemCABundle is added to npm's trusted CAs when FNHOOK_NPM_CAFILE is not set and the
// file exists: harmless where it is already trusted, and needed where TLS is intercepted.
const systemCABundle = "/etc/ssl/certs/ca-certificates.crt"

func main() { server.Main(run) }

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
	npmCfg := npm.Config{
		NPM:          env.String("FNHOOK_NPM_BIN", "npm"),
		Registry:     env.String("FNHOOK_NPM_REGISTRY", npm.DefaultRegistry),
		CAFile:       caFile,
		Timeout:      timeout,
		WorkDir:      workDir,
		User:         env.String("FNHOOK_BUILDER_USER", "nobody"),
		FetchRetries: env.Int("FNHOOK_NPM_FETCH_RETRIES", 2, 0, 10),
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
	installer, err := npm.New(npmCfg)
	if err != nil {
		return err
	}
	// Leftovers of builders killed mid-build; anything older than a build can take is dead.
	if n, err := installer.Sweep(timeout + cfg.ClaimTTL + 5*time.Minute); err != nil {
		log.Warn("could not sweep old build folders", "err", err)
	} else if n > 0 {
		log.Info("removed old build folders", "count", n)
	}
	if !installer.Sandboxed() {
		log.Warn("not running as root: npm and install scripts run as the builder's own user")
	}
	consul, err := discovery.New(ctx, common.ConsulAddr)
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
	srv := server.New(common.Service, log)
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

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "unknown"
	}
	return h
}
