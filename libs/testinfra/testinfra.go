// Package testinfra gives integration tests the real servers: it finds Consul, Nomad,
// RabbitMQ, DynamoDB Local and the S3 server on their local addresses, starts them with
// scripts/infra.sh when they are not running, and hands each test unique names (tables,
// buckets, queues) that it removes afterwards, so tests can run in parallel.
//
// A server that cannot be started fails the test loudly; nothing is skipped.
package testinfra

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fnhook/fnhook/libs/blob"
	"github.com/fnhook/fnhook/libs/discovery"
	"github.com/fnhook/fnhook/libs/queue"
	"github.com/fnhook/fnhook/libs/server"
	"github.com/fnhook/fnhook/libs/store"
)

// Env holds the addresses and credentials of the running servers.
type Env struct {
	Root        string // the repository's root
	ConsulAddr  string
	NomadAddr   string // http://host:port
	AMQPURL     string
	DynamoDB    string
	S3Endpoint  string
	Region      string
	AccessKey   string
	SecretKey   string
	ModulesDir  string // the module cache host volume
	HandlerKey  string // FNHOOK_HANDLER_SECRET of the local platform
	AdminKey    string // FNHOOK_ADMIN_KEY of the local platform
	NomadToken  string // the operator's (management) Nomad ACL token, if ACLs are on
	ConsulToken string // the operator's (management) Consul ACL token, if ACLs are on
	StateDir    string
	SecretsFile string
}

var (
	once    sync.Once
	shared  *Env
	initErr error
)

// Start returns the environment, starting the servers if any is not answering.
func Start(t testing.TB) *Env {
	t.Helper()
	once.Do(func() { shared, initErr = start() })
	if initErr != nil {
		t.Fatalf("real servers are not available: %v", initErr)
	}
	return shared
}

// Root returns the repository root (the folder holding go.work).
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.work above the working directory")
		}
		dir = parent
	}
}

func start() (*Env, error) {
	root, err := Root()
	if err != nil {
		return nil, err
	}
	vars, err := infraEnv(root)
	if err != nil {
		return nil, err
	}
	e := &Env{
		Root:        root,
		ConsulAddr:  vars["FNHOOK_CONSUL_ADDR"],
		NomadAddr:   vars["FNHOOK_NOMAD_ADDR"],
		AMQPURL:     vars["FNHOOK_AMQP_URL"],
		DynamoDB:    vars["FNHOOK_DYNAMODB_ENDPOINT"],
		S3Endpoint:  vars["FNHOOK_S3_ENDPOINT"],
		ModulesDir:  vars["FNHOOK_MODULES_DIR"],
		SecretsFile: vars["FNHOOK_SECRETS_FILE"],
		Region:      "us-east-1",
	}
	e.StateDir = filepath.Dir(e.SecretsFile)
	if !e.allUp() {
		cmd := exec.Command(filepath.Join(root, "scripts", "infra.sh"), "up")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("scripts/infra.sh up: %w", err)
		}
		if !e.allUp() {
			return nil, fmt.Errorf("servers still not answering after scripts/infra.sh up")
		}
	}
	secrets, err := readEnvFile(e.SecretsFile)
	if err != nil {
		return nil, err
	}
	e.AccessKey = secrets["FNHOOK_AWS_ACCESS_KEY_ID"]
	e.SecretKey = secrets["FNHOOK_AWS_SECRET_ACCESS_KEY"]
	e.HandlerKey = secrets["FNHOOK_HANDLER_SECRET"]
	e.AdminKey = secrets["FNHOOK_ADMIN_KEY"]
	// With ACLs on, tests act as the operator: the management tokens and the broker's
	// admin account of this state directory. The Nomad and Consul clients read their
	// token from NOMAD_TOKEN and CONSUL_HTTP_TOKEN when none is given, so every client a
	// test makes (and a service run in-process) carries it.
	e.NomadToken = secrets["NOMAD_TOKEN"]
	e.ConsulToken = secrets["CONSUL_HTTP_TOKEN"]
	for k, v := range map[string]string{"NOMAD_TOKEN": e.NomadToken, "CONSUL_HTTP_TOKEN": e.ConsulToken} {
		if v != "" && os.Getenv(k) == "" {
			if err := os.Setenv(k, v); err != nil {
				return nil, err
			}
		}
	}
	if u := secrets["FNHOOK_AMQP_URL"]; u != "" {
		e.AMQPURL = u
	}
	return e, nil
}

func infraEnv(root string) (map[string]string, error) {
	out, err := exec.Command(filepath.Join(root, "scripts", "infra.sh"), "env").Output()
	if err != nil {
		return nil, fmt.Errorf("scripts/infra.sh env: %w", err)
	}
	return parseEnv(strings.NewReader(string(out))), nil
}

func readEnvFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseEnv(f), nil
}

func parseEnv(r io.Reader) map[string]string {
	m := map[string]string{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "="); ok && !strings.HasPrefix(k, "#") {
			m[k] = v
		}
	}
	return m
}

func (e *Env) allUp() bool {
	c := &http.Client{Timeout: 2 * time.Second}
	ok := func(url string, want ...int) bool {
		resp, err := c.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		for _, w := range want {
			if resp.StatusCode == w {
				return true
			}
		}
		return false
	}
	dial := func(addr string) bool {
		conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return false
		}
		conn.Close()
		return true
	}
	return ok("http://"+e.ConsulAddr+"/v1/status/leader", 200) &&
		ok(e.NomadAddr+"/v1/agent/health", 200) &&
		ok(e.DynamoDB, 400) &&
		dial(strings.TrimPrefix(e.S3Endpoint, "http://")) &&
		dial("127.0.0.1:5672")
}

// Name returns a unique, lower-case name starting with prefix, valid as a table, bucket,
// queue, tenant or job name.
func Name(prefix string) string {
	return prefix + "-" + server.NewID()[:12]
}

// Logger returns a logger that writes through t.Log.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewJSONHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Store opens a Store on a fresh table that is dropped when the test ends.
func (e *Env) Store(t testing.TB) *store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := store.Open(ctx, e.StoreConfig(Name("t")))
	if err != nil {
		t.Fatalf("open dynamodb table: %v", err)
	}
	t.Cleanup(func() { _ = s.DeleteTable(context.Background()) })
	return s
}

// StoreConfig is the store configuration for table.
func (e *Env) StoreConfig(table string) store.Config {
	return store.Config{Endpoint: e.DynamoDB, Region: e.Region, AccessKey: "local", SecretKey: "local", Table: table}
}

// BlobConfig is the blob configuration for bucket.
func (e *Env) BlobConfig(bucket string) blob.Config {
	return blob.Config{Endpoint: e.S3Endpoint, Region: e.Region, AccessKey: e.AccessKey, SecretKey: e.SecretKey, Bucket: bucket}
}

// Blob opens a fresh bucket that is removed when the test ends.
func (e *Env) Blob(t testing.TB) *blob.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := blob.Open(ctx, e.BlobConfig(Name("b")))
	if err != nil {
		t.Fatalf("open s3 bucket: %v", err)
	}
	t.Cleanup(func() { _ = b.DeleteBucket(context.Background()) })
	return b
}

// QueueNames returns unique exchange and queue names for one test.
func QueueNames() queue.Names {
	n := Name("q")
	return queue.Names{Exchange: n + ".events", BuildQueue: n + ".build", BuildDLQ: n + ".build.dlq"}
}

// Queue dials RabbitMQ with unique names (see QueueNames); the connection closes and the
// queues are deleted when the test ends.
func (e *Env) Queue(t testing.TB, names queue.Names) *queue.Conn {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c, err := queue.Dial(ctx, e.AMQPURL, names, Logger(t))
	if err != nil {
		cancel()
		t.Fatalf("dial rabbitmq: %v", err)
	}
	t.Cleanup(func() {
		_ = c.DeleteQueues(names.BuildQueue, names.BuildDLQ)
		_ = c.DeleteExchange(names.Exchange)
		cancel()
		c.Close()
	})
	return c
}

// Consul connects to the Consul agent.
func (e *Env) Consul(t testing.TB) *discovery.Consul {
	t.Helper()
	c, err := discovery.New(context.Background(), e.ConsulAddr)
	if err != nil {
		t.Fatalf("consul: %v", err)
	}
	return c
}

// ReadSecret returns the value of key in the secrets file at path ("" when absent).
func ReadSecret(path, key string) string {
	m, err := readEnvFile(path)
	if err != nil {
		return ""
	}
	return m[key]
}
