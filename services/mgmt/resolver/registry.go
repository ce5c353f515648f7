// Package resolver turns a function's npm dependency ranges into exact versions, using
// the npm registry's abbreviated metadata and npm's own range rules.
package resolver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	fnhook "github.com/fnhook/fnhook/libs"
)

// Options bound the registry client; zero fields take the defaults in parentheses.
type Options struct {
	// Registry is the registry's base URL (https://registry.npmjs.org/).
	Registry string
	// Timeout bounds one metadata fetch (10 s).
	Timeout time.Duration
	// MaxBytes bounds one metadata document (20 MiB).
	MaxBytes int64
	// TTL is how long metadata is reused (60 s).
	TTL time.Duration
	// MaxEntries bounds the cache (512 packages).
	MaxEntries int
	// Client is the HTTP client (a dedicated one with sane timeouts).
	Client *http.Client
}

// Resolver resolves dependency ranges against an npm registry. It is safe for concurrent use.
type Resolver struct {
	base     string
	timeout  time.Duration
	maxBytes int64
	ttl      time.Duration
	max      int
	client   *http.Client
	now      func() time.Time

	mu    sync.Mutex
	cache map[string]cached
}

type cached struct {
	meta    Metadata
	fetched time.Time
}

// New returns a Resolver for o.Registry.
func New(o Options) (*Resolver, error) {
	if o.Registry == "" {
		o.Registry = "https://registry.npmjs.org/"
	}
	u, err := url.Parse(o.Registry)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("npm registry %q is not an http(s) URL", o.Registry)
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 20 << 20
	}
	if o.TTL <= 0 {
		o.TTL = 60 * time.Second
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = 512
	}
	if o.Client == nil {
		o.Client = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			MaxIdleConnsPerHost:   8,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   5 * time.Second,
			ResponseHeaderTimeout: o.Timeout,
		}}
	}
	return &Resolver{
		base: strings.TrimRight(o.Registry, "/") + "/", timeout: o.Timeout, maxBytes: o.MaxBytes,
		ttl: o.TTL, max: o.MaxEntries, client: o.Client, now: time.Now, cache: map[string]cached{},
	}, nil
}

// Resolve returns the exact version of every dependency. An unknown package or a range no
// version satisfies is an *fnhook.Error with code unresolvable_dependency (422) naming it;
// a registry that cannot be reached is unavailable (503).
func (r *Resolver) Resolve(ctx context.Context, deps map[string]string) (map[string]string, error) {
	names := make([]string, 0, len(deps))
	for name := range deps {
		names = append(names, name)
	}
	sort.Strings(names)
	versions := make([]string, len(names))
	errs := make([]error, len(names))
	sem := make(chan struct{}, resolveParallelism)
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			versions[i], errs[i] = r.resolveOne(ctx, name, deps[name])
		}()
	}
	wg.Wait()
	out := make(map[string]string, len(deps))
	for i, name := range names {
		if errs[i] != nil {
			return nil, errs[i] // the first in name order, so the answer is stable
		}
		out[name] = versions[i]
	}
	return out, nil
}

// resolveParallelism bounds concurrent registry fetches of one Resolve call.
const resolveParallelism = 4

func (r *Resolver) resolveOne(ctx context.Context, name, spec string) (string, error) {
	meta, err := r.Metadata(ctx, name)
	if err != nil {
		return "", err
	}
	v, err := Pick(meta, spec)
	if err != nil {
		return "", &fnhook.Error{Code: fnhook.CodeUnresolvableDependency,
			Message: "cannot resolve dependency " + name + "@" + spec + ": " + strings.TrimSuffix(err.Error(), ": "+ErrNoMatch.Error())}
	}
	return v, nil
}

// Metadata returns the package's abbreviated registry document, from the cache when fresh.
func (r *Resolver) Metadata(ctx context.Context, name string) (Metadata, error) {
	if m, ok := r.cached(name); ok {
		return m, nil
	}
	m, err := r.fetch(ctx, name)
	if err != nil {
		return Metadata{}, err
	}
	r.store(name, m)
	return m, nil
}

func (r *Resolver) cached(name string) (Metadata, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.cache[name]
	if !ok || r.now().Sub(c.fetched) > r.ttl {
		return Metadata{}, false
	}
	return c.meta, true
}

// store adds m to the cache; when full it drops expired entries first, then the oldest.
func (r *Resolver) store(name string, m Metadata) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if _, ok := r.cache[name]; !ok && len(r.cache) >= r.max {
		oldest, oldestAt := "", now
		for k, c := range r.cache {
			if now.Sub(c.fetched) > r.ttl {
				delete(r.cache, k)
				continue
			}
			if c.fetched.Before(oldestAt) || oldest == "" {
				oldest, oldestAt = k, c.fetched
			}
		}
		if len(r.cache) >= r.max {
			delete(r.cache, oldest)
		}
	}
	r.cache[name] = cached{meta: m, fetched: now}
}

// packageURL is the registry URL of name; a scoped name's slash is escaped as npm does.
func (r *Resolver) packageURL(name string) string {
	if scope, rest, ok := strings.Cut(name, "/"); ok && strings.HasPrefix(name, "@") {
		return r.base + url.PathEscape(scope) + "%2f" + url.PathEscape(rest)
	}
	return r.base + url.PathEscape(name)
}

func (r *Resolver) fetch(ctx context.Context, name string) (Metadata, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.packageURL(name), nil)
	if err != nil {
		return Metadata{}, fmt.Errorf("registry request for %s: %w", name, err)
	}
	req.Header.Set("Accept", "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8")
	resp, err := r.client.Do(req)
	if err != nil {
		return Metadata{}, unavailable(name, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return Metadata{}, &fnhook.Error{Code: fnhook.CodeUnresolvableDependency,
			Message: "cannot resolve dependency " + name + ": no such package in the npm registry"}
	case resp.StatusCode != http.StatusOK:
		return Metadata{}, unavailable(name, fmt.Errorf("registry answered %s", resp.Status))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, r.maxBytes+1))
	if err != nil {
		return Metadata{}, unavailable(name, err)
	}
	if int64(len(body)) > r.maxBytes {
		return Metadata{}, &fnhook.Error{Code: fnhook.CodeUnresolvableDependency,
			Message: fmt.Sprintf("cannot resolve dependency %s: its registry metadata is larger than %d MiB", name, r.maxBytes>>20)}
	}
	var m Metadata
	if err := json.Unmarshal(body, &m); err != nil {
		return Metadata{}, unavailable(name, fmt.Errorf("decode metadata: %w", err))
	}
	if m.Name == "" {
		m.Name = name
	}
	return m, nil
}

func unavailable(name string, err error) error {
	msg := "the npm registry could not be reached to resolve " + name + "; retry later"
	if errors.Is(err, context.DeadlineExceeded) {
		msg = "the npm registry did not answer in time for " + name + "; retry later"
	}
	return &fnhook.Error{Code: fnhook.CodeUnavailable, Message: msg, Err: err}
}
