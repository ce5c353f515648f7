// Package discovery registers fnhook services in Consul and finds healthy instances of
// the others, by one-off lookup or by watching with blocking queries.
package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"time"

	consul "github.com/hashicorp/consul/api"
)

// Instance is one healthy instance of a service.
type Instance struct {
	ID      string
	Address string // host:port
	Node    string
	Meta    map[string]string
}

// Consul wraps a Consul agent client.
type Consul struct {
	c *consul.Client
}

// Option changes how New talks to Consul.
type Option func(*consul.Config)

// Token makes every call carry the ACL token t (none when t is empty: then Consul's own
// CONSUL_HTTP_TOKEN variable, if set, still applies).
func Token(t string) Option {
	return func(c *consul.Config) {
		if t != "" {
			c.Token = t
		}
	}
}

// New connects to the Consul agent at addr (host:port) and checks that it answers.
func New(ctx context.Context, addr string, opts ...Option) (*Consul, error) {
	cfg := consul.DefaultConfig()
	cfg.Address = addr
	for _, o := range opts {
		o(cfg)
	}
	c, err := consul.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", addr, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := c.Status().LeaderWithQueryOptions((&consul.QueryOptions{}).WithContext(ctx)); err != nil {
		return nil, fmt.Errorf("consul at %s does not answer (check FNHOOK_CONSUL_ADDR): %v", addr, err)
	}
	return &Consul{c: c}, nil
}

// Client returns the underlying Consul client.
func (d *Consul) Client() *consul.Client { return d.c }

// Registration describes a service instance to register.
type Registration struct {
	Service string // e.g. "fnhook-gateway"
	ID      string // unique per instance
	Address string // host:port that others dial
	Meta    map[string]string
	// CheckPath is the HTTP path of the health check (default /healthz).
	CheckPath string
}

// Register registers the instance with an HTTP health check that Consul runs every 2s,
// and deregisters it automatically if it stays critical for a minute.
func (d *Consul) Register(r Registration) error {
	host, portStr, err := net.SplitHostPort(r.Address)
	if err != nil {
		return fmt.Errorf("register %s: address %q: %w", r.Service, r.Address, err)
	}
	port, _ := strconv.Atoi(portStr)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	path := r.CheckPath
	if path == "" {
		path = "/healthz"
	}
	reg := &consul.AgentServiceRegistration{
		ID: r.ID, Name: r.Service, Address: host, Port: port, Meta: r.Meta,
		Check: &consul.AgentServiceCheck{
			HTTP:                           fmt.Sprintf("http://%s%s", net.JoinHostPort(host, portStr), path),
			Interval:                       "2s",
			Timeout:                        "2s",
			DeregisterCriticalServiceAfter: "1m",
		},
	}
	if err := d.c.Agent().ServiceRegister(reg); err != nil {
		return fmt.Errorf("register %s in consul: %w", r.Service, err)
	}
	return nil
}

// Deregister removes the instance.
func (d *Consul) Deregister(id string) error {
	return d.c.Agent().ServiceDeregister(id)
}

// Healthy returns the passing instances of service, sorted by ID.
func (d *Consul) Healthy(ctx context.Context, service string) ([]Instance, error) {
	insts, _, err := d.healthy(ctx, service, 0)
	return insts, err
}

func (d *Consul) healthy(ctx context.Context, service string, index uint64) ([]Instance, uint64, error) {
	q := (&consul.QueryOptions{WaitIndex: index, WaitTime: 30 * time.Second}).WithContext(ctx)
	entries, meta, err := d.c.Health().Service(service, "", true, q)
	if err != nil {
		return nil, 0, fmt.Errorf("consul health of %s: %w", service, err)
	}
	out := make([]Instance, 0, len(entries))
	for _, e := range entries {
		addr := e.Service.Address
		if addr == "" {
			addr = e.Node.Address
		}
		out = append(out, Instance{
			ID: e.Service.ID, Address: net.JoinHostPort(addr, strconv.Itoa(e.Service.Port)),
			Node: e.Node.Node, Meta: e.Service.Meta,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, meta.LastIndex, nil
}

// Watch calls fn with the healthy instances of service now and after every change, using
// Consul blocking queries, until ctx ends. Errors are logged and retried with backoff.
func (d *Consul) Watch(ctx context.Context, log *slog.Logger, service string, fn func([]Instance)) {
	var index uint64
	backoff := 250 * time.Millisecond
	for ctx.Err() == nil {
		insts, next, err := d.healthy(ctx, service, index)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Warn("consul watch failed", "service", service, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
			index = 0
			continue
		}
		backoff = 250 * time.Millisecond
		if next < index {
			next = 0 // index went backwards (Consul restarted): start over
		}
		if next != index || index == 0 {
			fn(insts)
		}
		index = next
	}
}
