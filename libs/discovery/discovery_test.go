package discovery_test

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/fnhook/fnhook/libs/discovery"
	"github.com/fnhook/fnhook/libs/testinfra"
)

func TestRegisterAndFindHealthy(t *testing.T) {
	env := testinfra.Start(t)
	c := env.Consul(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })}
	go srv.Serve(ln)
	defer srv.Close()

	service := testinfra.Name("fnhook-test")
	id := service + "-1"
	if err := c.Register(discovery.Registration{Service: service, ID: id, Address: ln.Addr().String()}); err != nil {
		t.Fatal(err)
	}
	defer c.Deregister(id)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	seen := make(chan []discovery.Instance, 8)
	go c.Watch(ctx, testinfra.Logger(t), service, func(i []discovery.Instance) { seen <- i })
	for {
		select {
		case insts := <-seen:
			if len(insts) == 1 && insts[0].Address == ln.Addr().String() {
				got, err := c.Healthy(ctx, service)
				if err != nil || len(got) != 1 {
					t.Fatalf("Healthy = %v, %v", got, err)
				}
				return
			}
		case <-ctx.Done():
			t.Fatal("the instance never became healthy in consul")
		}
	}
}
