package queue_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	fnhook "github.com/fnhook/fnhook/libs"
	"github.com/fnhook/fnhook/libs/queue"
	"github.com/fnhook/fnhook/libs/testinfra"
)

func TestPublishConfirmConsumeAck(t *testing.T) {
	env := testinfra.Start(t)
	names := testinfra.QueueNames()
	q := env.Queue(t, names)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if err := q.PublishBuild(ctx, fnhook.BuildRequest{Name: "dayjs", Version: "1.11.13"}); err != nil {
		t.Fatalf("publish with confirm: %v", err)
	}
	if err := q.PublishBuild(ctx, fnhook.BuildRequest{Name: "bad", Version: "0"}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	got := make(chan fnhook.BuildRequest, 4)
	cctx, stop := context.WithCancel(ctx)
	go q.Consume(cctx, queue.QueueSpec{Name: names.BuildQueue, Prefetch: 1}, func(_ context.Context, d queue.Delivery) error {
		var r fnhook.BuildRequest
		if err := json.Unmarshal(d.Body, &r); err != nil {
			return err
		}
		got <- r
		if r.Name == "bad" {
			return queue.ErrReject // goes to the dead-letter queue
		}
		return nil
	})
	for i := 0; i < 2; i++ {
		select {
		case r := <-got:
			if r.Name != "dayjs" && r.Name != "bad" {
				t.Fatalf("unexpected message %+v", r)
			}
		case <-ctx.Done():
			t.Fatal("no message consumed")
		}
	}
	stop()

	// The rejected message is on the DLQ, the acked one is gone from the build queue.
	dlq := make(chan string, 1)
	dctx, dstop := context.WithCancel(ctx)
	defer dstop()
	go q.Consume(dctx, queue.QueueSpec{Name: names.BuildDLQ}, func(_ context.Context, d queue.Delivery) error {
		dlq <- string(d.Body)
		return nil
	})
	select {
	case body := <-dlq:
		if body != `{"name":"bad","version":"0"}` {
			t.Fatalf("dead-lettered %s", body)
		}
	case <-ctx.Done():
		t.Fatal("rejected message did not reach the DLQ")
	}
}

func TestEventsFanOut(t *testing.T) {
	env := testinfra.Start(t)
	names := testinfra.QueueNames()
	q := env.Queue(t, names)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got := make(chan fnhook.FunctionChanged, 1)
	ready := make(chan struct{})
	go q.Consume(ctx, queue.QueueSpec{Bindings: []string{fnhook.EventFunctionChanged}}, func(_ context.Context, d queue.Delivery) error {
		var ev fnhook.FunctionChanged
		if err := json.Unmarshal(d.Body, &ev); err != nil {
			return errors.Join(err, queue.ErrReject)
		}
		got <- ev
		return nil
	})
	close(ready)
	// The exclusive queue is declared asynchronously: publish until the event arrives.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := q.PublishEvent(ctx, fnhook.EventFunctionChanged, fnhook.FunctionChanged{Tenant: "a", Function: "f", Version: 3}); err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-got:
			if ev.Tenant != "a" || ev.Version != 3 {
				t.Fatalf("event %+v", ev)
			}
			return
		case <-tick.C:
		case <-ctx.Done():
			t.Fatal("event not delivered")
		}
	}
}
