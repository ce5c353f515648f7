// Command mgmt is fnhook's management API: tenants, tokens and functions under /v1, and
// the tracker that turns functions ready when the modules they need are built.
package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"golang.org/x/sync/errgroup"

	fnhook "github.com/fnhook/fnhook/libs"
	"github.com/fnhook/fnhook/libs/config"
	"github.com/fnhook/fnhook/libs/discovery"
	"github.com/fnhook/fnhook/libs/logging"
	"github.com/fnhook/fnhook/libs/queue"
	"github.com/fnhook/fnhook/libs/server"
	"github.com/fnhook/fnhook/libs/store"
	"github.com/fnhook/fnhook/services/mgmt/api"
	"github.com/fnhook/fnhook/services/mgmt/builds"
	"github.com/fnhook/fnhook/services/mgmt/resolver"
	"github.com/fnhook/fnhook/services/mgmt/syntax"
)

func main() { server.Main(run) }

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	env := config.New(getenv)
	common := config.LoadCommon(env, "mgmt", "127.0.0.1:8081")
	adminKey := env.Secret("FNHOOK_ADMIN_KEY", 16)
	registry := env.String("FNHOOK_NPM_REGISTRY", "https://registry.npmjs.org/")
	node := env.String("FNHOOK_NODE", "node")
	checkTimeout := env.Duration("FNHOOK_SYNTAX_TIMEOUT", 5*time.Second)
	converge := env.Duration("FNHOOK_CONVERGE_INTERVAL", 30*time.Second)
	d := fnhook.DefaultLimits
	defaults := fnhook.Limits{
		MaxCodeBytes:    env.Int("FNHOOK_DEFAULT_MAX_CODE_BYTES", d.MaxCodeBytes, 1, 4<<20),
		MaxFunctions:    env.Int("FNHOOK_DEFAULT_MAX_FUNCTIONS", d.MaxFunctions, 1, 10000),
		MaxDependencies: env.Int("FNHOOK_DEFAULT_MAX_DEPENDENCIES", d.MaxDependencies, 1, 256),
		MaxTimeoutMs:    env.Int("FNHOOK_DEFAULT_MAX_TIMEOUT_MS", d.MaxTimeoutMs, 1, 15*60*1000),
		MemoryMB:        env.Int("FNHOOK_DEFAULT_MEMORY_MB", d.MemoryMB, 32, 16384),
		MaxConfigBytes:  env.Int("FNHOOK_DEFAULT_MAX_CONFIG_BYTES", d.MaxConfigBytes, 1, 1<<20),
	}
	if err := env.Err(); err != nil {
		return err
	}
	res, err := resolver.New(resolver.Options{Registry: registry})
	if err != nil {
		return fmt.Errorf("invalid FNHOOK_NPM_REGISTRY: %w", err)
	}
	checker, err := syntax.New(syntax.Options{Node: node, Timeout: checkTimeout})
	if err != nil {
		return fmt.Errorf("invalid FNHOOK_NODE: %w", err)
	}
	log := logging.New(stdout, common.Service, common.LogLevel)

	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := store.Open(startCtx, store.Config{Endpoint: common.DynamoDB, Region: common.Region,
		AccessKey: common.AWSAccessKey, SecretKey: common.AWSSecretKey, Table: common.Table})
	if err != nil {
		return fmt.Errorf("FNHOOK_DYNAMODB_ENDPOINT: %w", err)
	}
	q, err := queue.Dial(ctx, common.AMQPURL, common.Queues, log)
	if err != nil {
		return fmt.Errorf("FNHOOK_AMQP_URL: %w", err)
	}
	defer q.Close()
	consul, err := discovery.New(startCtx, common.ConsulAddr, discovery.Token(common.ConsulToken))
	if err != nil {
		return fmt.Errorf("FNHOOK_CONSUL_ADDR: %w", err)
	}

	srv := server.New(common.Service, log)
	tracker := builds.New(builds.Options{Store: st, Queue: q, Log: log, Interval: converge, Metrics: srv.Registry})
	api.New(api.Config{
		Store: st, Builds: tracker, Checker: checker, Resolver: res,
		AdminKey: adminKey, Defaults: defaults, Log: log, Metrics: srv.Registry,
	}).Register(srv.Echo)
	srv.Ready = func(ctx context.Context) error {
		if err := st.Ping(ctx); err != nil {
			return fmt.Errorf("dynamodb: %w", err)
		}
		return q.Ping(ctx)
	}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(ctx, common, consul, nil) })
	g.Go(func() error { return tracker.Run(ctx) })
	return g.Wait()
}
