// Command gateway is fnhook's HTTP entry point: it routes /v1 to the management API and
// /run/{tenant}/{function} to the tenant's runner.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"golang.org/x/sync/errgroup"

	fnhook "github.com/fnhook/fnhook/libs"
	"github.com/fnhook/fnhook/libs/config"
	"github.com/fnhook/fnhook/libs/discovery"
	"github.com/fnhook/fnhook/libs/handlerapi"
	"github.com/fnhook/fnhook/libs/logging"
	"github.com/fnhook/fnhook/libs/queue"
	"github.com/fnhook/fnhook/libs/server"
	"github.com/fnhook/fnhook/services/gateway/gateway"
	"github.com/fnhook/fnhook/services/gateway/hashring"
	"github.com/fnhook/fnhook/services/gateway/routecache"
)

func main() { server.Main(run) }

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	env := config.New(getenv)
	common := config.LoadCommon(env, "gateway", "127.0.0.1:8080")
	secret := env.Secret("FNHOOK_HANDLER_SECRET", 16)
	cfg := gateway.Config{
		MaxBody:     int64(env.Int("FNHOOK_MAX_BODY", 6<<20, 1024, 1<<30)),
		MaxMgmtBody: int64(env.Int("FNHOOK_MAX_MGMT_BODY", 2<<20, 1024, 64<<20)),
		ReplayBytes: int64(env.Int("FNHOOK_REPLAY_BYTES", 256<<10, 0, 16<<20)),
		CallTimeout: env.Duration("FNHOOK_CALL_TIMEOUT", 65*time.Second),
		MaxInflight: env.Int("FNHOOK_MAX_INFLIGHT", 2048, 1, 1<<20),
	}
	routeTTL := env.Duration("FNHOOK_ROUTE_TTL", 30*time.Second)
	routeMax := env.Int("FNHOOK_ROUTE_CACHE_SIZE", 100000, 1, 10000000)
	if err := env.Err(); err != nil {
		return err
	}
	log := logging.New(stdout, common.Service, common.LogLevel)
	consul, err := discovery.New(ctx, common.ConsulAddr, discovery.Token(common.ConsulToken))
	if err != nil {
		return fmt.Errorf("FNHOOK_CONSUL_ADDR: %w", err)
	}
	q, err := queue.Dial(ctx, common.AMQPURL, common.Queues, log)
	if err != nil {
		return fmt.Errorf("FNHOOK_AMQP_URL: %w", err)
	}
	defer q.Close()

	srv := server.New(common.Service, log)
	routes := routecache.New(routeMax, routeTTL)
	var handlers hashring.Ring
	gw := gateway.New(log, cfg, routes, &handlers, handlerapi.New(secret, nil), srv.Registry)
	gw.Register(srv.Echo)
	srv.Ready = q.Ping
	srv.QuietPrefix = "/run/"

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		consul.Watch(ctx, log, "fnhook-handler", func(insts []discovery.Instance) {
			handlers.Set(addresses(insts))
			log.Info("handlers changed", "count", len(insts))
		})
		return nil
	})
	g.Go(func() error {
		consul.Watch(ctx, log, "fnhook-mgmt", func(insts []discovery.Instance) {
			gw.SetMgmt(addresses(insts))
			log.Info("mgmt instances changed", "count", len(insts))
		})
		return nil
	})
	g.Go(func() error {
		// Each gateway has its own queue: every instance must see every invalidation.
		return q.Consume(ctx, queue.QueueSpec{Bindings: []string{fnhook.EventFunctionChanged, fnhook.EventTenantDeleted}, Prefetch: 64},
			func(_ context.Context, d queue.Delivery) error {
				invalidate(routes, d.RoutingKey, d.Body)
				return nil
			})
	})
	g.Go(func() error { return srv.Serve(ctx, common, consul, nil) })
	return g.Wait()
}

func addresses(insts []discovery.Instance) []string {
	out := make([]string, len(insts))
	for i, in := range insts {
		out[i] = in.Address
	}
	return out
}

// invalidate drops the routes an event makes stale.
func invalidate(routes *routecache.Cache, key string, body []byte) {
	switch key {
	case fnhook.EventFunctionChanged:
		var ev fnhook.FunctionChanged
		if json.Unmarshal(body, &ev) == nil {
			routes.Drop(ev.Tenant, ev.Function)
		}
	case fnhook.EventTenantDeleted:
		var ev fnhook.TenantDeleted
		if json.Unmarshal(body, &ev) == nil {
			routes.DropTenant(ev.Tenant)
		}
	}
}
