package server

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/fnhook/fnhook/libs/config"
	"github.com/fnhook/fnhook/libs/discovery"
)

// RunFunc is a service's whole life: it returns when ctx ends (SIGTERM) or on a fatal error.
type RunFunc func(ctx context.Context, getenv func(string) string, stdout io.Writer) error

// Main runs run with the process's environment; SIGTERM or SIGINT cancels its context. On
// error it prints one line and exits 1.
func Main(run RunFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(ctx, os.Getenv, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "fnhook: %v\n", err)
		os.Exit(1)
	}
}

// Serve listens on c.Listen, registers the instance in Consul as fnhook-<service> with an
// HTTP check on /healthz, serves until ctx ends, then deregisters and shuts down within
// 10 s. meta is attached to the registration (e.g. the Nomad node a handler owns).
func (s *Server) Serve(ctx context.Context, c config.Common, consul *discovery.Consul, meta map[string]string) error {
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s (FNHOOK_LISTEN): %w", c.Listen, err)
	}
	adv := c.Advertise
	if _, port, _ := net.SplitHostPort(adv); port == "0" {
		host, _, _ := net.SplitHostPort(adv)
		_, p, _ := net.SplitHostPort(ln.Addr().String())
		adv = net.JoinHostPort(host, p)
	}
	id := "fnhook-" + c.Service + "-" + adv
	if consul != nil {
		if err := consul.Register(discovery.Registration{Service: "fnhook-" + c.Service, ID: id, Address: adv, Meta: meta}); err != nil {
			ln.Close()
			return err
		}
		defer func() { _ = consul.Deregister(id) }()
	}
	s.log.Info("serving", "addr", ln.Addr().String(), "consul_id", id)
	return s.Run(ctx, ln, 10*time.Second)
}
