// Package routecache keeps the gateway's routes (tenant, function) -> runner, bounded in
// size and in age, and invalidated by events.
package routecache

import (
	"sync"
	"time"

	fnhook "github.com/fnhook/fnhook/libs"
)

type key struct{ tenant, function string }

type entry struct {
	route   fnhook.Route
	expires time.Time
}

// Cache is a bounded TTL map of routes. It is safe for concurrent use.
type Cache struct {
	mu  sync.RWMutex
	m   map[key]entry
	max int
	ttl time.Duration
	now func() time.Time
}

// New returns a cache of at most max routes, each kept at most ttl.
func New(max int, ttl time.Duration) *Cache {
	return &Cache{m: make(map[key]entry), max: max, ttl: ttl, now: time.Now}
}

// Get returns the cached route of tenant's function, if fresh.
func (c *Cache) Get(tenant, function string) (fnhook.Route, bool) {
	c.mu.RLock()
	e, ok := c.m[key{tenant, function}]
	c.mu.RUnlock()
	if !ok || c.now().After(e.expires) {
		return fnhook.Route{}, false
	}
	return e.route, true
}

// Put caches a route. When the cache is full, expired entries go first, then arbitrary
// ones (Go's map order), so it never grows past its bound.
func (c *Cache) Put(tenant, function string, r fnhook.Route) {
	r.Cold = false
	c.mu.Lock()
	defer c.mu.Unlock()
	k := key{tenant, function}
	if _, exists := c.m[k]; !exists && len(c.m) >= c.max {
		now := c.now()
		for ek, e := range c.m {
			if now.After(e.expires) {
				delete(c.m, ek)
			}
		}
		for ek := range c.m {
			if len(c.m) < c.max {
				break
			}
			delete(c.m, ek)
		}
	}
	c.m[k] = entry{route: r, expires: c.now().Add(c.ttl)}
}

// Drop forgets the route of tenant's function.
func (c *Cache) Drop(tenant, function string) {
	c.mu.Lock()
	delete(c.m, key{tenant, function})
	c.mu.Unlock()
}

// DropAddress forgets every route to the runner at address (it is gone).
func (c *Cache) DropAddress(address string) {
	c.mu.Lock()
	for k, e := range c.m {
		if e.route.Address == address {
			delete(c.m, k)
		}
	}
	c.mu.Unlock()
}

// DropTenant forgets every route of tenant.
func (c *Cache) DropTenant(tenant string) {
	c.mu.Lock()
	for k := range c.m {
		if k.tenant == tenant {
			delete(c.m, k)
		}
	}
	c.mu.Unlock()
}

// Len is the number of cached routes.
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
