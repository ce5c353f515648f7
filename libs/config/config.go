// Package config reads FNHOOK_* environment variables into typed values. Every reader
// records the first bad value, so a service can report one line naming the variable.
package config

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/fnhook/fnhook/libs/queue"
)

// Env reads variables through getenv (os.Getenv in main, a map in tests).
type Env struct {
	getenv func(string) string
	err    error
}

// New returns an Env reading through getenv.
func New(getenv func(string) string) *Env { return &Env{getenv: getenv} }

// Err is the first invalid value met, naming its variable; nil when all were fine.
func (e *Env) Err() error { return e.err }

func (e *Env) fail(key, val, why string) {
	if e.err == nil {
		e.err = fmt.Errorf("invalid %s=%q: %s", key, val, why)
	}
}

// String returns the variable or def when unset or empty.
func (e *Env) String(key, def string) string {
	if v := strings.TrimSpace(e.getenv(key)); v != "" {
		return v
	}
	return def
}

// Secret returns the variable, failing when it is required and unset or shorter than min.
// The value is never part of an error.
func (e *Env) Secret(key string, min int) string {
	v := strings.TrimSpace(e.getenv(key))
	if len(v) < min {
		if e.err == nil {
			e.err = fmt.Errorf("invalid %s: must be set to at least %d characters", key, min)
		}
	}
	return v
}

// Int returns the variable parsed as an integer in [min, max], or def when unset.
func (e *Env) Int(key string, def, min, max int) int {
	v := strings.TrimSpace(e.getenv(key))
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		e.fail(key, v, "not an integer")
		return def
	}
	if n < min || n > max {
		e.fail(key, v, fmt.Sprintf("must be between %d and %d", min, max))
		return def
	}
	return n
}

// Duration returns the variable parsed by time.ParseDuration, or def when unset.
func (e *Env) Duration(key string, def time.Duration) time.Duration {
	v := strings.TrimSpace(e.getenv(key))
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		e.fail(key, v, "not a duration such as 500ms or 30s")
		return def
	}
	return d
}

// Bool returns the variable parsed by strconv.ParseBool, or def when unset.
func (e *Env) Bool(key string, def bool) bool {
	v := strings.TrimSpace(e.getenv(key))
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		e.fail(key, v, "not a boolean")
		return def
	}
	return b
}

// Addr returns the variable as a host:port listen or dial address, or def when unset.
func (e *Env) Addr(key, def string) string {
	v := e.String(key, def)
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		e.fail(key, v, "not a host:port address")
		return def
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		e.fail(key, v, "port must be a number from 0 to 65535")
		return def
	}
	return net.JoinHostPort(host, port)
}

// Common is the configuration every service shares: where the real servers are.
type Common struct {
	// Service is the service's name, e.g. "gateway"; it registers as fnhook-<Service>.
	Service string
	// Listen is the address the service's HTTP server binds.
	Listen string
	// Advertise is the address registered in Consul (defaults to Listen).
	Advertise  string
	ConsulAddr string
	// ConsulToken is the service's Consul ACL token (empty where Consul runs without ACLs).
	ConsulToken  string
	LogLevel     string
	AMQPURL      string
	DynamoDB     string
	Table        string
	Region       string
	S3Endpoint   string
	Bucket       string
	AWSAccessKey string
	AWSSecretKey string
	// Queues are the RabbitMQ exchange and queue names (tests run services on unique ones).
	Queues queue.Names
}

// LoadCommon reads the shared variables; defaultListen is the service's own default port.
func LoadCommon(e *Env, service, defaultListen string) Common {
	c := Common{
		Service:      service,
		Listen:       e.Addr("FNHOOK_LISTEN", defaultListen),
		ConsulAddr:   e.Addr("FNHOOK_CONSUL_ADDR", "127.0.0.1:8500"),
		ConsulToken:  e.String("FNHOOK_CONSUL_TOKEN", ""),
		LogLevel:     e.String("FNHOOK_LOG_LEVEL", "info"),
		AMQPURL:      e.String("FNHOOK_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
		DynamoDB:     e.String("FNHOOK_DYNAMODB_ENDPOINT", "http://127.0.0.1:8000"),
		Table:        e.String("FNHOOK_DYNAMODB_TABLE", "fnhook"),
		Region:       e.String("FNHOOK_AWS_REGION", "us-east-1"),
		S3Endpoint:   e.String("FNHOOK_S3_ENDPOINT", "http://127.0.0.1:7070"),
		Bucket:       e.String("FNHOOK_S3_BUCKET", "fnhook-modules"),
		AWSAccessKey: e.String("FNHOOK_AWS_ACCESS_KEY_ID", "fnhook"),
		AWSSecretKey: e.String("FNHOOK_AWS_SECRET_ACCESS_KEY", "fnhook-local-secret"),
		Queues: queue.Names{
			Exchange:   e.String("FNHOOK_EVENTS_EXCHANGE", queue.DefaultNames.Exchange),
			BuildQueue: e.String("FNHOOK_BUILD_QUEUE", queue.DefaultNames.BuildQueue),
			BuildDLQ:   e.String("FNHOOK_BUILD_DLQ", queue.DefaultNames.BuildDLQ),
		},
	}
	c.Advertise = e.Addr("FNHOOK_ADVERTISE", c.Listen)
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		e.fail("FNHOOK_LOG_LEVEL", c.LogLevel, "must be debug, info, warn or error")
	}
	return c
}
