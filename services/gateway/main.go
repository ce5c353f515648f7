// Command gateway is fnhook's HTTP entry point: it routes /v1 to the management API and
// /run/{tenant}/{function} to the tenant's runner.
package main

import (
	"context"
	"fmt"
	"io"

	"github.com/fnhook/fnhook/libs/config"
	"github.com/fnhook/fnhook/libs/discovery"
	"github.com/fnhook/fnhook/libs/logging"
	"github.com/fnhook/fnhook/libs/server"
)

func main() { server.Main(run) }

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	env := config.New(getenv)
	common := config.LoadCommon(env, "gateway", "127.0.0.1:8080")
	if err := env.Err(); err != nil {
		return err
	}
	log := logging.New(stdout, common.Service, common.LogLevel)
	consul, err := discovery.New(ctx, common.ConsulAddr)
	if err != nil {
		return fmt.Errorf("FNHOOK_CONSUL_ADDR: %w", err)
	}
	srv := server.New(common.Service, log)
	return srv.Serve(ctx, common, consul, nil)
}
