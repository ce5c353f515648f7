package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	fnhook "github.com/fnhook/fnhook/libs"
	"github.com/fnhook/fnhook/libs/queue"
	"github.com/fnhook/fnhook/libs/server"
	"github.com/fnhook/fnhook/libs/store"
	"github.com/fnhook/fnhook/libs/testinfra"
	"github.com/fnhook/fnhook/services/mgmt/builds"
	"github.com/fnhook/fnhook/services/mgmt/resolver"
	"github.com/fnhook/fnhook/services/mgmt/syntax"
)

// backend is the real servers one test uses: a fresh table and unique queue names.
type backend struct {
	env   *testinfra.Env
	store *store.Store
	names queue.Names
	queue *queue.Conn
}

func newBackend(t *testing.T) *backend {
	t.Helper()
	env := testinfra.Start(t)
	names := testinfra.QueueNames()
	t.Logf("queues %s, exchange %s", names.BuildQueue, names.Exchange)
	b := &backend{env: env, store: env.Store(t), names: names, queue: env.Queue(t, names)}
	t.Cleanup(func() { _ = b.queue.DeleteQueues(names.Exchange + ".mgmt") })
	// mgmt's durable event queue exists before any instance runs, as it does in production
	// once mgmt ran once, so an event published right after start-up is not lost.
	conn, err := amqp.Dial(env.AMQPURL)
	if err != nil {
		t.Fatalf("dial rabbitmq: %v", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(names.Exchange+".mgmt", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{fnhook.EventModuleReady, fnhook.EventModuleFailed} {
		if err := ch.QueueBind(names.Exchange+".mgmt", k, names.Exchange, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// instance is one mgmt service (API and tracker) over a backend, served by httptest.
type instance struct {
	url     string
	admin   string
	tracker *builds.Tracker
}

const testAdminKey = "test-admin-key-0123456789"

func (b *backend) start(t *testing.T) *instance {
	t.Helper()
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	if testing.Verbose() {
		log = testinfra.Logger(t)
	}
	ctx, cancel := context.WithCancel(context.Background())
	// A connection of its own, as a second process would have.
	q, err := queue.Dial(ctx, b.env.AMQPURL, b.names, log)
	if err != nil {
		t.Fatalf("dial rabbitmq: %v", err)
	}
	res, err := resolver.New(resolver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// A generous check timeout: the test machine runs many tests at once.
	checker, err := syntax.New(syntax.Options{Timeout: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New("mgmt", log)
	tracker := builds.New(builds.Options{Store: b.store, Queue: q, Log: log, Interval: time.Hour, Metrics: srv.Registry})
	New(Config{Store: b.store, Builds: tracker, Checker: checker, Resolver: res, AdminKey: testAdminKey,
		Log: log, Metrics: srv.Registry}).Register(srv.Echo)
	ts := httptest.NewServer(srv.Echo)
	done := make(chan struct{})
	go func() { defer close(done); _ = tracker.Run(ctx) }()
	t.Cleanup(func() {
		ts.Close()
		cancel()
		<-done
		q.Close()
	})
	return &instance{url: ts.URL, admin: testAdminKey, tracker: tracker}
}

// reply is an HTTP answer with its JSON body decoded.
type reply struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

func (r reply) errCode() string {
	e, _ := r.body["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

func (r reply) errMessage() string {
	e, _ := r.body["error"].(map[string]any)
	s, _ := e["message"].(string)
	return s
}

func (r reply) str(k string) string { s, _ := r.body[k].(string); return s }

func (r reply) num(k string) int { n, _ := r.body[k].(float64); return int(n) }

func (r reply) obj(k string) map[string]any { m, _ := r.body[k].(map[string]any); return m }

// call sends a request; body is sent as is when a string or []byte, else as JSON.
func (in *instance) call(t *testing.T, method, path, token string, body any, headers ...string) reply {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, in.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode, header: resp.Header, raw: raw}
	if len(raw) > 0 {
		_ = json.Unmarshal(raw, &r.body)
	}
	return r
}

// must asserts the status and returns the reply.
func must(t *testing.T, r reply, status int) reply {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.raw)
	}
	return r
}

// tenantWithToken creates a tenant (with limits) and returns a token of it.
func (in *instance) tenantWithToken(t *testing.T, limits map[string]int) (tenant, token, tokenID string) {
	t.Helper()
	tenant = testinfra.Name("tn")
	must(t, in.call(t, "PUT", "/v1/tenants/"+tenant, in.admin, map[string]any{"limits": limits}), http.StatusCreated)
	r := must(t, in.call(t, "POST", "/v1/tenants/"+tenant+"/tokens", in.admin, nil), http.StatusCreated)
	return tenant, r.str("token"), r.str("id")
}

// collector gathers messages from a queue (the build queue, or events by routing key).
type collector struct {
	mu   sync.Mutex
	msgs []queue.Delivery
	got  chan struct{}
}

func (b *backend) collect(t *testing.T, spec queue.QueueSpec) *collector {
	t.Helper()
	c := &collector{got: make(chan struct{}, 1024)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	ready := make(chan struct{})
	go func() {
		defer close(done)
		close(ready)
		_ = b.queue.Consume(ctx, spec, func(_ context.Context, d queue.Delivery) error {
			c.mu.Lock()
			c.msgs = append(c.msgs, d)
			c.mu.Unlock()
			c.got <- struct{}{}
			return nil
		})
	}()
	<-ready
	t.Cleanup(func() { cancel(); <-done })
	return c
}

// events collects the events published under keys, once the collector's queue is bound
// (a probe event published until it arrives proves it).
func (b *backend) events(t *testing.T, keys ...string) *collector {
	t.Helper()
	c := b.collect(t, queue.QueueSpec{Bindings: keys})
	probe := fnhook.FunctionChanged{Tenant: "probe", Function: testinfra.Name("probe")}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if err := b.queue.PublishEvent(context.Background(), keys[0], probe); err != nil {
			t.Fatal(err)
		}
		select {
		case <-c.got:
			if c.count(func(d queue.Delivery) bool { return strings.Contains(string(d.Body), probe.Function) }) > 0 {
				return c
			}
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("event collector never bound")
		}
	}
}

// waitFor returns the first message (from the start) that match accepts, or fails after timeout.
func (c *collector) waitFor(t *testing.T, timeout time.Duration, what string, match func(queue.Delivery) bool) queue.Delivery {
	t.Helper()
	deadline := time.After(timeout)
	for {
		c.mu.Lock()
		for _, d := range c.msgs {
			if match(d) {
				c.mu.Unlock()
				return d
			}
		}
		c.mu.Unlock()
		select {
		case <-c.got:
		case <-deadline:
			t.Fatalf("no %s within %s", what, timeout)
		}
	}
}

func (c *collector) count(match func(queue.Delivery) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, d := range c.msgs {
		if match(d) {
			n++
		}
	}
	return n
}

func buildRequest(d queue.Delivery) fnhook.BuildRequest {
	var r fnhook.BuildRequest
	_ = json.Unmarshal(d.Body, &r)
	return r
}

// waitStatus polls GET until the function's status is want.
func (in *instance) waitStatus(t *testing.T, tenant, fn, token, want string, timeout time.Duration) reply {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r := must(t, in.call(t, "GET", "/v1/tenants/"+tenant+"/functions/"+fn, token, nil), http.StatusOK)
		if r.str("status") == want {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("function %s/%s is %q after %s, want %q: %s", tenant, fn, r.str("status"), timeout, want, r.raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
