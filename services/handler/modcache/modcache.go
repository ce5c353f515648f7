// Package modcache keeps a node's module cache: each built module closure name@version is
// downloaded from the blob store once, checked against its recorded sha256, and unpacked
// into <dir>/<name>@<version>/node_modules/... (scoped: <dir>/@scope/name@version/...),
// which every runner mounts read-only and links into its functions' node_modules.
//
// A folder appears there complete or not at all: it is unpacked into a temporary folder
// beside it and renamed into place. Concurrent requests for one module unpack it once.
package modcache

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"

	fnhook "github.com/fnhook/fnhook/libs"
)

// Blobs is where module tarballs are read from (libs/blob).
type Blobs interface {
	Get(ctx context.Context, key string) (io.ReadCloser, int64, error)
}

// Records gives a module's build record (libs/store).
type Records interface {
	GetModule(ctx context.Context, name, version string) (fnhook.Module, bool, error)
}

// npm package names, scoped ones too; no "." or ".." segment can match.
var (
	namePattern    = regexp.MustCompile(`^(?:@[a-zA-Z0-9~-][a-zA-Z0-9._~-]*/)?[a-zA-Z0-9~-][a-zA-Z0-9._~-]*$`)
	versionPattern = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z.+-]*$`)
)

// tmpPrefix names the folders being unpacked; left over ones are removed at start.
const tmpPrefix = ".fnhook-tmp-"

// Cache is a node's module cache. It is safe for concurrent use.
type Cache struct {
	dir     string
	blobs   Blobs
	records Records
	limits  Limits
	log     *slog.Logger
	flight  singleflight.Group
	unpacks *prometheus.CounterVec
	seconds prometheus.Histogram
}

// New returns the cache rooted at dir (created if missing, mode 0755) and removes the
// temporary folders an earlier, killed process left there. reg receives its metrics.
func New(dir string, blobs Blobs, records Records, lim Limits, log *slog.Logger, reg prometheus.Registerer) (*Cache, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("module cache %s: %w", dir, err)
	}
	c := &Cache{
		dir: dir, blobs: blobs, records: records, limits: lim, log: log,
		unpacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fnhook_handler_module_unpacks_total", Help: "Modules downloaded and unpacked into the node's cache, by outcome.",
		}, []string{"outcome"}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "fnhook_handler_module_unpack_seconds", Help: "Time to download, verify and unpack one module.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
	}
	if reg != nil {
		reg.MustRegister(c.unpacks, c.seconds)
	}
	c.removeLeftovers()
	return c, nil
}

// Dir is the cache's root folder.
func (c *Cache) Dir() string { return c.dir }

// Path is the folder of name@version: <dir>/<name>@<version>.
func (c *Cache) Path(name, version string) string {
	return filepath.Join(c.dir, filepath.FromSlash(name)+"@"+version)
}

// Has reports whether name@version is unpacked.
func (c *Cache) Has(name, version string) bool {
	_, err := os.Stat(filepath.Join(c.Path(name, version), "node_modules", filepath.FromSlash(name)))
	return err == nil
}

// Ensure makes sure every module of deps (name -> exact version) is unpacked, fetching the
// missing ones in parallel. A module that is not ready or whose tarball does not match its
// record is an error naming it.
func (c *Cache) Ensure(ctx context.Context, deps map[string]string) error {
	var missing [][2]string
	for name, version := range deps {
		if !namePattern.MatchString(name) || !versionPattern.MatchString(version) {
			return &fnhook.Error{Code: fnhook.CodeFunctionFailed, Message: fmt.Sprintf("invalid dependency %q@%q", name, version)}
		}
		if !c.Has(name, version) {
			missing = append(missing, [2]string{name, version})
		}
	}
	if len(missing) == 0 {
		return nil
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, m := range missing {
		g.Go(func() error { return c.fetch(gctx, m[0], m[1]) })
	}
	return g.Wait()
}

// fetch unpacks one module once, however many callers ask for it at the same time. The
// unpack runs on its own context so that one caller giving up does not fail the others.
func (c *Cache) fetch(ctx context.Context, name, version string) error {
	key := fnhook.ModuleKey(name, version)
	ch := c.flight.DoChan(key, func() (any, error) {
		if c.Has(name, version) {
			return nil, nil
		}
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
		defer cancel()
		start := time.Now()
		err := c.install(uctx, name, version)
		if err != nil {
			c.unpacks.WithLabelValues("failed").Inc()
			return nil, err
		}
		c.unpacks.WithLabelValues("ok").Inc()
		c.seconds.Observe(time.Since(start).Seconds())
		c.log.Info("module unpacked", "module", key, "took", time.Since(start))
		return nil, nil
	})
	select {
	case <-ctx.Done():
		return fmt.Errorf("module %s: %w", key, ctx.Err())
	case res := <-ch:
		return res.Err
	}
}

func (c *Cache) install(ctx context.Context, name, version string) error {
	key := fnhook.ModuleKey(name, version)
	m, found, err := c.records.GetModule(ctx, name, version)
	if err != nil {
		return fmt.Errorf("module %s: read record: %w", key, err)
	}
	switch {
	case !found:
		return &fnhook.Error{Code: fnhook.CodeModuleUnavailable, Message: fmt.Sprintf("module %s has no build record", key)}
	case m.Status == fnhook.ModuleFailed:
		return &fnhook.Error{Code: fnhook.CodeFunctionFailed, Message: fmt.Sprintf("module %s failed to build: %s", key, m.Error)}
	case m.Status != fnhook.ModuleReady || m.SHA256 == "":
		return &fnhook.Error{Code: fnhook.CodeModuleUnavailable, Message: fmt.Sprintf("module %s is not built yet", key)}
	}
	body, _, err := c.blobs.Get(ctx, fnhook.ModuleObjectKey(name, version))
	if err != nil {
		return fmt.Errorf("module %s: download: %w", key, err)
	}
	defer body.Close()

	final := c.Path(name, version)
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil { // <dir>/@scope
		return fmt.Errorf("module %s: %w", key, err)
	}
	tmp, err := os.MkdirTemp(c.dir, tmpPrefix)
	if err != nil {
		return fmt.Errorf("module %s: %w", key, err)
	}
	defer os.RemoveAll(tmp) // gone after the rename; cleans up on any failure

	// One pass: hash the compressed bytes while unpacking them; nothing is renamed into
	// place unless the whole stream matched the recorded digest.
	h := sha256.New()
	counted := &countingReader{r: io.TeeReader(body, h)}
	limited := io.LimitReader(counted, maxCompressed(m.Size))
	zr, err := gzip.NewReader(limited)
	if err != nil {
		return fmt.Errorf("module %s: %w: not gzip: %v", key, errUnsafe, err)
	}
	if err := unpack(zr, tmp, c.limits); err != nil {
		return fmt.Errorf("module %s: %w", key, err)
	}
	if _, err := io.Copy(io.Discard, limited); err != nil { // the gzip trailer and padding
		return fmt.Errorf("module %s: download: %w", key, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); !strings.EqualFold(got, m.SHA256) {
		return fmt.Errorf("module %s: sha256 %s does not match the record's %s (%d bytes read)", key, got, m.SHA256, counted.n)
	}
	if _, err := os.Stat(filepath.Join(tmp, "node_modules", filepath.FromSlash(name))); err != nil {
		return fmt.Errorf("module %s: the tarball has no node_modules/%s", key, name)
	}
	if err := fixModes(tmp); err != nil {
		return fmt.Errorf("module %s: %w", key, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		if c.Has(name, version) {
			return nil // another process put it there first
		}
		return fmt.Errorf("module %s: move into place: %w", key, err)
	}
	return nil
}

// maxCompressed bounds the download: the recorded size plus slack, or 1 GiB unknown.
func maxCompressed(size int64) int64 {
	if size <= 0 {
		return 1 << 30
	}
	return size + 1<<20
}

// removeLeftovers deletes temporary folders older than an hour: another handler on the
// same node (a test beside a platform) may be unpacking into a young one right now.
func (c *Cache) removeLeftovers() {
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), tmpPrefix) {
			continue
		}
		fi, err := e.Info()
		if err == nil && time.Since(fi.ModTime()) > time.Hour {
			if err := os.RemoveAll(filepath.Join(c.dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				c.log.Warn("cannot remove a left over module folder", "dir", e.Name(), "err", err)
			}
		}
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
