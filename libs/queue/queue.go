// Package queue carries fnhook's builds and events over RabbitMQ: one connection that
// redials on its own, publishes that wait for the broker's confirm, and consumers that
// come back after a broker restart.
package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	fnhook "github.com/fnhook/fnhook/libs"
)

// Names are the exchange and queues to use; tests give each run unique ones.
type Names struct {
	Exchange   string // topic exchange of events
	BuildQueue string // durable queue of build requests
	BuildDLQ   string // where failed builds end up
}

// DefaultNames are the production names.
var DefaultNames = Names{Exchange: fnhook.EventsExchange, BuildQueue: fnhook.BuildQueue, BuildDLQ: fnhook.BuildDLQ}

// Conn is a self-healing connection to RabbitMQ. It is safe for concurrent use.
type Conn struct {
	url   string
	names Names
	log   *slog.Logger

	mu      sync.Mutex
	conn    *amqp.Connection
	pub     *amqp.Channel // confirm-mode channel for publishing
	pubMu   sync.Mutex    // one publish at a time on pub
	closed  bool
	changed chan struct{} // closed and replaced whenever conn is replaced
}

// Dial connects to url and declares the topology. It fails if the broker does not answer
// within ctx, so a service with a wrong FNHOOK_AMQP_URL exits at start with a clear error.
func Dial(ctx context.Context, url string, names Names, log *slog.Logger) (*Conn, error) {
	c := &Conn{url: url, names: names, log: log, changed: make(chan struct{})}
	if err := c.connect(); err != nil {
		return nil, fmt.Errorf("rabbitmq: %w", err)
	}
	go c.redial(ctx)
	return c, nil
}

// Names returns the names this connection uses.
func (c *Conn) Names() Names { return c.names }

func (c *Conn) connect() error {
	conn, err := amqp.DialConfig(c.url, amqp.Config{Heartbeat: 10 * time.Second, Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	ch, err := conn.Channel()
	if err != nil {
		conn.Close()
		return fmt.Errorf("channel: %w", err)
	}
	if err := declare(ch, c.names); err != nil {
		conn.Close()
		return err
	}
	if err := ch.Confirm(false); err != nil {
		conn.Close()
		return fmt.Errorf("confirm mode: %w", err)
	}
	c.mu.Lock()
	c.conn, c.pub = conn, ch
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	return nil
}

func declare(ch *amqp.Channel, n Names) error {
	if err := ch.ExchangeDeclare(n.Exchange, "topic", true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %s: %w", n.Exchange, err)
	}
	if _, err := ch.QueueDeclare(n.BuildDLQ, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare queue %s: %w", n.BuildDLQ, err)
	}
	args := amqp.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": n.BuildDLQ}
	if _, err := ch.QueueDeclare(n.BuildQueue, true, false, false, false, args); err != nil {
		return fmt.Errorf("declare queue %s: %w", n.BuildQueue, err)
	}
	return nil
}

// redial watches the connection and replaces it when it drops, until ctx ends.
func (c *Conn) redial(ctx context.Context) {
	for {
		c.mu.Lock()
		conn := c.conn
		c.mu.Unlock()
		closed := conn.NotifyClose(make(chan *amqp.Error, 1))
		select {
		case <-ctx.Done():
			c.Close()
			return
		case err := <-closed:
			if c.isClosed() {
				return
			}
			c.log.Warn("rabbitmq connection lost; redialing", "err", err)
		}
		backoff := 200 * time.Millisecond
		for {
			if err := c.connect(); err == nil {
				c.log.Info("rabbitmq connection restored")
				break
			} else if ctx.Err() != nil {
				return
			} else {
				c.log.Warn("rabbitmq redial failed", "err", err, "retry_in", backoff)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
		}
	}
}

func (c *Conn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Close closes the connection; consumers return.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	return c.conn.Close()
}

// Ping reports whether the connection is up.
func (c *Conn) Ping(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil || c.conn.IsClosed() {
		return errors.New("rabbitmq connection is down")
	}
	return nil
}

// current returns the live connection and publish channel, waiting for a redial if the
// connection is down, until ctx ends.
func (c *Conn) current(ctx context.Context) (*amqp.Connection, *amqp.Channel, error) {
	for {
		c.mu.Lock()
		conn, pub, changed, closed := c.conn, c.pub, c.changed, c.closed
		c.mu.Unlock()
		if closed {
			return nil, nil, errors.New("rabbitmq connection closed")
		}
		if !conn.IsClosed() && !pub.IsClosed() {
			return conn, pub, nil
		}
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("rabbitmq unavailable: %w", ctx.Err())
		case <-changed:
		case <-time.After(100 * time.Millisecond):
			// The publish channel can close while the connection stays up.
			if !conn.IsClosed() && pub.IsClosed() {
				c.reopenPub(conn)
			}
		}
	}
}

func (c *Conn) reopenPub(conn *amqp.Connection) {
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	if err := ch.Confirm(false); err != nil {
		ch.Close()
		return
	}
	c.mu.Lock()
	if c.conn == conn {
		c.pub = ch
	} else {
		ch.Close()
	}
	c.mu.Unlock()
}

// Publish sends v as persistent JSON to exchange with routing key, and returns once the
// broker confirmed it. It retries across a reconnect until ctx ends.
func (c *Conn) Publish(ctx context.Context, exchange, key string, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("marshal message for %s: %w", key, err)
	}
	msg := amqp.Publishing{
		ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: body, Timestamp: time.Now(),
	}
	for {
		_, pub, err := c.current(ctx)
		if err != nil {
			return err
		}
		c.pubMu.Lock()
		dc, err := pub.PublishWithDeferredConfirmWithContext(ctx, exchange, key, true, false, msg)
		var ok bool
		if err == nil {
			ok, err = dc.WaitContext(ctx)
		}
		c.pubMu.Unlock()
		if err == nil && ok {
			return nil
		}
		if err == nil {
			err = errors.New("broker refused the message (nack)")
		}
		if ctx.Err() != nil {
			return fmt.Errorf("publish %s: %w", key, err)
		}
		c.log.Warn("publish failed; retrying", "key", key, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("publish %s: %w", key, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// PublishBuild enqueues a build request on the build queue.
func (c *Conn) PublishBuild(ctx context.Context, r fnhook.BuildRequest) error {
	return c.Publish(ctx, "", c.names.BuildQueue, r)
}

// PublishEvent publishes an event on the events exchange under key.
func (c *Conn) PublishEvent(ctx context.Context, key string, v any) error {
	return c.Publish(ctx, c.names.Exchange, key, v)
}

// Delivery is one message handed to a consumer.
type Delivery = amqp.Delivery

// Handler handles one delivery. Consume acks it when Handler returns nil. On error it is
// requeued, unless the error wraps ErrReject, in which case it is dead-lettered (for the
// build queue) or dropped.
type Handler func(ctx context.Context, d Delivery) error

// ErrReject marks a message that must not be retried.
var ErrReject = errors.New("message rejected")

// QueueSpec describes the queue a consumer reads.
type QueueSpec struct {
	Name string
	// Bindings are routing keys on the events exchange to bind the queue to.
	Bindings []string
	// Durable queues survive restarts and are shared by competing consumers; otherwise the
	// queue is exclusive to this connection and deleted with it (fan-out to each instance).
	Durable bool
	// Prefetch bounds unacknowledged deliveries, i.e. concurrent handlers (default 1).
	Prefetch int
}

// Consume reads the queue until ctx ends, reconnecting as needed. Up to Prefetch handlers
// run at once. It returns only when ctx ends or the Conn is closed.
func (c *Conn) Consume(ctx context.Context, spec QueueSpec, h Handler) error {
	if spec.Prefetch <= 0 {
		spec.Prefetch = 1
	}
	for {
		conn, _, err := c.current(ctx)
		if err != nil {
			return err
		}
		err = c.consumeOnce(ctx, conn, spec, h)
		if ctx.Err() != nil || c.isClosed() {
			return nil
		}
		c.log.Warn("consumer stopped; resuming", "queue", spec.Name, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (c *Conn) consumeOnce(ctx context.Context, conn *amqp.Connection, spec QueueSpec, h Handler) error {
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	if err := ch.Qos(spec.Prefetch, 0, false); err != nil {
		return err
	}
	name := spec.Name
	if name != c.names.BuildQueue && name != c.names.BuildDLQ {
		q, err := ch.QueueDeclare(name, spec.Durable, !spec.Durable, !spec.Durable, false, nil)
		if err != nil {
			return fmt.Errorf("declare queue %s: %w", name, err)
		}
		name = q.Name
		for _, k := range spec.Bindings {
			if err := ch.QueueBind(name, k, c.names.Exchange, false, nil); err != nil {
				return fmt.Errorf("bind %s to %s: %w", name, k, err)
			}
		}
	}
	deliveries, err := ch.ConsumeWithContext(ctx, name, "", false, !spec.Durable && spec.Name == "", false, false, nil)
	if err != nil {
		return fmt.Errorf("consume %s: %w", name, err)
	}
	sem := make(chan struct{}, spec.Prefetch)
	var wg sync.WaitGroup
	defer wg.Wait()
	for d := range deliveries {
		sem <- struct{}{}
		wg.Add(1)
		go func(d amqp.Delivery) {
			defer func() { <-sem; wg.Done() }()
			err := h(ctx, d)
			switch {
			case err == nil:
				_ = d.Ack(false)
			case errors.Is(err, ErrReject):
				c.log.Warn("message rejected", "queue", name, "err", err)
				_ = d.Nack(false, false)
			default:
				if ctx.Err() == nil {
					c.log.Warn("message handling failed; requeued", "queue", name, "err", err)
				}
				_ = d.Nack(false, true)
			}
		}(d)
	}
	return errors.New("delivery channel closed")
}

// DeleteQueues deletes the named queues (tests and cleanup).
func (c *Conn) DeleteQueues(names ...string) error {
	conn, _, err := c.current(context.Background())
	if err != nil {
		return err
	}
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	for _, n := range names {
		if _, err := ch.QueueDelete(n, false, false, false); err != nil {
			return err
		}
	}
	return nil
}

// DeleteExchange deletes the named exchange (tests and cleanup).
func (c *Conn) DeleteExchange(name string) error {
	conn, _, err := c.current(context.Background())
	if err != nil {
		return err
	}
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	return ch.ExchangeDelete(name, false, false)
}
