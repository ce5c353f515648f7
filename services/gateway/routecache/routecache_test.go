package routecache

import (
	"testing"
	"time"

	fnhook "github.com/fnhook/fnhook/libs"
)

func TestCache(t *testing.T) {
	now := time.Unix(1000, 0)
	c := New(3, time.Second)
	c.now = func() time.Time { return now }
	r := fnhook.Route{Address: "127.0.0.1:1", Token: "t", Version: 2, Cold: true}

	c.Put("a", "f", r)
	got, ok := c.Get("a", "f")
	if !ok || got.Address != r.Address || got.Cold {
		t.Fatalf("get = %+v %v; want the route, not cold", got, ok)
	}
	now = now.Add(2 * time.Second)
	if _, ok := c.Get("a", "f"); ok {
		t.Fatal("route outlived its TTL")
	}

	for _, fn := range []string{"f1", "f2", "f3", "f4", "f5"} {
		c.Put("b", fn, r)
	}
	if c.Len() > 3 {
		t.Fatalf("cache holds %d routes, bound is 3", c.Len())
	}
	c.Put("c", "g", fnhook.Route{Address: "127.0.0.1:2"})
	c.DropTenant("b")
	if _, ok := c.Get("c", "g"); !ok || c.Len() != 1 {
		t.Fatalf("DropTenant removed the wrong routes: len %d", c.Len())
	}
	c.DropAddress("127.0.0.1:2")
	if c.Len() != 0 {
		t.Fatal("DropAddress kept a route to the gone runner")
	}
}
