// Package build is the module builder's consumer: for each build request it makes sure
// name@version is built once in the whole system (a claim in the module record, renewed
// while the build runs), installs it with npm in a sandbox, packs and uploads the tarball,
// records the outcome and announces it. Transient faults are retried with backoff and end
// in the dead-letter queue; permanent ones are recorded with npm's own error text.
package build

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	fnhook "github.com/fnhook/fnhook/libs"
	"github.com/fnhook/fnhook/libs/queue"
	"github.com/fnhook/fnhook/services/builder/npm"
	"github.com/fnhook/fnhook/services/builder/tarball"
)

// Store is what the builder needs of the module records (libs/store implements it).
type Store interface {
	ClaimModule(ctx context.Context, name, version, owner string, ttl time.Duration) (fnhook.Module, bool, error)
	RenewModuleClaim(ctx context.Context, name, version, owner string, ttl time.Duration) error
	FinishModuleClaim(ctx context.Context, m fnhook.Module, owner string) error
	ReleaseModule(ctx context.Context, name, version, owner string) error
	AbandonModule(ctx context.Context, name, version, owner string) error
}

// Blobs is where tarballs go (libs/blob implements it).
type Blobs interface {
	Put(ctx context.Context, key string, r io.ReadSeeker, size int64) error
}

// Events publishes module.ready and module.failed (libs/queue implements it).
type Events interface {
	PublishEvent(ctx context.Context, key string, v any) error
}

// Consumer delivers build requests (libs/queue implements it).
type Consumer interface {
	Consume(ctx context.Context, spec queue.QueueSpec, h queue.Handler) error
}

// Config tunes a Builder. Zero values take the defaults noted.
type Config struct {
	// Owner identifies this process in module claims; unique per process.
	Owner string
	// Queue is the durable build queue (default fnhook.BuildQueue).
	Queue string
	// Concurrency is the number of builds at once (the queue prefetch). Default 2.
	Concurrency int
	// ClaimTTL is how long a claim lives without renewal; a crashed builder's claim is
	// taken over after it. Default 150s.
	ClaimTTL time.Duration
	// Retries is how many times a transiently failed build is tried again before it is
	// dead-lettered. Default 3; negative means none.
	Retries int
	// Backoff is the first retry's delay; each next one doubles. Default 2s.
	Backoff time.Duration
	// MaxBytes bounds a packed module; larger fails permanently. Default 200 MiB.
	MaxBytes int64
	// Grace is how long running builds may go on after shutdown began. Default 30s.
	Grace time.Duration
	// Poll is how often a module another builder holds is looked at again. Default 1s.
	Poll time.Duration
	// MaxWait bounds waiting on another builder's claim before the message is requeued.
	// Default 2 x ClaimTTL.
	MaxWait time.Duration
	// WorkDir is where tarballs are written before upload (default os.TempDir()).
	WorkDir string
}

func (c Config) withDefaults() Config {
	if c.Queue == "" {
		c.Queue = fnhook.BuildQueue
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 2
	}
	if c.ClaimTTL <= 0 {
		c.ClaimTTL = 150 * time.Second
	}
	if c.Retries == 0 {
		c.Retries = 3
	}
	if c.Retries < 0 {
		c.Retries = 0
	}
	if c.Backoff <= 0 {
		c.Backoff = 2 * time.Second
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = 200 << 20
	}
	if c.Grace <= 0 {
		c.Grace = 30 * time.Second
	}
	if c.Poll <= 0 {
		c.Poll = time.Second
	}
	if c.MaxWait <= 0 {
		c.MaxWait = 2 * c.ClaimTTL
	}
	if c.WorkDir == "" {
		c.WorkDir = os.TempDir()
	}
	return c
}

// Builder builds modules from build requests. It is safe for concurrent use.
type Builder struct {
	cfg    Config
	store  Store
	blobs  Blobs
	events Events
	npm    *npm.Installer
	log    *slog.Logger
	m      *metrics
	stats  counters
	locks  keyLocks
}

// New returns a Builder. Its metrics are registered on reg.
func New(cfg Config, st Store, bl Blobs, ev Events, inst *npm.Installer, reg prometheus.Registerer, log *slog.Logger) (*Builder, error) {
	cfg = cfg.withDefaults()
	if cfg.Owner == "" {
		return nil, errors.New("builder: an owner id is required")
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("builder metrics: %w", err)
	}
	return &Builder{cfg: cfg, store: st, blobs: bl, events: ev, npm: inst, log: log, m: m}, nil
}

// Stats returns what this Builder did so far.
func (b *Builder) Stats() Stats { return b.stats.snapshot() }

// Run consumes the build queue until ctx ends. Then it takes no new message, lets running
// builds finish within the grace period, interrupts the rest (their messages go back to
// the queue and their claims are released) and returns.
func (b *Builder) Run(ctx context.Context, q Consumer) error {
	work, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	go func() {
		select {
		case <-work.Done():
			return
		case <-ctx.Done():
		}
		b.log.Info("stopping: taking no new builds", "grace", b.cfg.Grace)
		t := time.NewTimer(b.cfg.Grace)
		defer t.Stop()
		select {
		case <-t.C:
			b.log.Warn("grace period over: interrupting running builds")
			stop()
		case <-work.Done():
		}
	}()
	spec := queue.QueueSpec{Name: b.cfg.Queue, Durable: true, Prefetch: b.cfg.Concurrency}
	return q.Consume(ctx, spec, func(dctx context.Context, d queue.Delivery) error {
		if dctx.Err() != nil {
			return fmt.Errorf("shutting down: %w", dctx.Err())
		}
		return b.handle(dctx, work, d)
	})
}

// Handle handles one build message: nil means ack, an error wrapping queue.ErrReject
// dead-letters it, any other error requeues it. ctx bounds everything.
func (b *Builder) Handle(ctx context.Context, d queue.Delivery) error {
	return b.handle(ctx, ctx, d)
}

// handle handles one message. Waiting (on another builder, on a retry's backoff) ends with
// wait; a build in progress ends with work, which outlives wait by the grace period.
func (b *Builder) handle(wait, work context.Context, d queue.Delivery) error {
	defer b.stats.handled.Add(1)
	req, err := ParseRequest(d.Body)
	if err != nil {
		b.stats.rejected.Add(1)
		b.m.rejected.Inc()
		b.log.Warn("invalid build request: dead-lettered", "err", err, "body", quoteBody(d.Body))
		return fmt.Errorf("%w: %w", queue.ErrReject, err)
	}
	key := fnhook.ModuleKey(req.Name, req.Version)
	log := b.log.With("module", key, "redelivered", d.Redelivered)
	// Claims are per process, so two deliveries of one module in this process would both
	// hold it: the second waits here for the first, then finds the module done.
	unlock, err := b.locks.lock(wait, key)
	if err != nil {
		return fmt.Errorf("wait for this builder's other build of %s: %w", key, err)
	}
	defer unlock()
	return b.process(wait, work, log, req, d.Redelivered)
}

// errLostClaim says another builder took the module over (our claim expired).
var errLostClaim = errors.New("claim lost to another builder")

// errUnannounced says the outcome was recorded but its event could not be published.
var errUnannounced = errors.New("outcome recorded but not announced")

// permanentError is a build failure that trying again will not fix.
type permanentError struct {
	reason  string
	message string
}

func (e *permanentError) Error() string { return e.reason + ": " + e.message }

func (b *Builder) process(wait, work context.Context, log *slog.Logger, req fnhook.BuildRequest, redelivered bool) error {
	key := fnhook.ModuleKey(req.Name, req.Version)
	waitUntil := time.Now().Add(b.cfg.MaxWait)
	storeFailures := 0
	unannounced := false
	for {
		m, claimed, err := b.store.ClaimModule(work, req.Name, req.Version, b.cfg.Owner, b.cfg.ClaimTTL)
		if err != nil {
			if wait.Err() != nil {
				return fmt.Errorf("claim %s: %w", key, err)
			}
			storeFailures++
			b.transient(log, "claim", err)
			if storeFailures > b.cfg.Retries {
				return b.deadLetter(work, log, req, storeFailures, err)
			}
			if err := sleep(wait, b.backoff(storeFailures)); err != nil {
				return err
			}
			continue
		}
		if !claimed {
			switch m.Status {
			case fnhook.ModuleReady, fnhook.ModuleFailed:
				if redelivered || unannounced {
					// The previous delivery (or our own last try) may have recorded the
					// outcome and died before announcing it: announce it (again).
					if err := b.publish(work, m); err != nil {
						return err
					}
				}
				log.Info("module already built; nothing to do", "status", m.Status)
				return nil
			}
			if time.Now().After(waitUntil) {
				return fmt.Errorf("module %s is still being built by %s after %s; requeueing", key, m.Owner, b.cfg.MaxWait)
			}
			log.Debug("module is being built by another builder; waiting", "owner", m.Owner)
			if err := sleep(wait, b.cfg.Poll); err != nil {
				return fmt.Errorf("wait for %s built by %s: %w", key, m.Owner, err)
			}
			continue
		}
		if m.Attempts > b.cfg.Retries+1 {
			// Builders keep dying on this one (or were stopped mid-build too often).
			return b.deadLetter(work, log, req, m.Attempts-1, errors.New("too many attempts"))
		}
		err = b.build(work, log, m)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, errLostClaim):
			log.Warn("another builder took the module over; not recording this build")
			continue
		case errors.Is(err, errUnannounced) && work.Err() == nil:
			// Recorded but not announced: the next round finds the record and announces.
			log.Warn("could not announce the outcome; trying again", "err", err)
			unannounced = true
			if err := sleep(wait, b.backoff(1)); err != nil {
				return err
			}
			continue
		case work.Err() != nil:
			// Shutting down: hand the claim back so another builder can start at once.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(work), 5*time.Second)
			if rerr := b.store.ReleaseModule(rctx, req.Name, req.Version, b.cfg.Owner); rerr != nil {
				log.Warn("could not release the claim; it will expire", "err", rerr)
			}
			cancel()
			return fmt.Errorf("build of %s interrupted: %w", key, err)
		}
		b.transient(log, "build", err)
		if m.Attempts >= b.cfg.Retries+1 {
			return b.deadLetter(work, log, req, m.Attempts, err)
		}
		if err := sleep(wait, b.backoff(m.Attempts)); err != nil {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(work), 5*time.Second)
			_ = b.store.ReleaseModule(rctx, req.Name, req.Version, b.cfg.Owner)
			cancel()
			return err
		}
	}
}

func (b *Builder) transient(log *slog.Logger, stage string, err error) {
	b.stats.transient.Add(1)
	b.m.failed.WithLabelValues(reasonTransient).Inc()
	log.Warn("build failed transiently", "stage", stage, "err", err)
}

// deadLetter gives the module up for now: the claim is released with its attempt count
// reset (so a re-driven message starts afresh) and the message goes to the DLQ.
func (b *Builder) deadLetter(ctx context.Context, log *slog.Logger, req fnhook.BuildRequest, attempts int, cause error) error {
	b.stats.deadLettered.Add(1)
	b.m.failed.WithLabelValues(reasonDeadLettered).Inc()
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := b.store.AbandonModule(actx, req.Name, req.Version, b.cfg.Owner); err != nil {
		log.Warn("could not release the claim; it will expire", "err", err)
	}
	log.Error("build failed transiently too often: dead-lettered", "attempts", attempts, "err", cause)
	return fmt.Errorf("%w: build of %s failed %d times: %w", queue.ErrReject, fnhook.ModuleKey(req.Name, req.Version), attempts, cause)
}

// backoff is the delay before retry n (1-based): Backoff, then doubling, at most 5 min.
func (b *Builder) backoff(n int) time.Duration {
	d := b.cfg.Backoff
	for i := 1; i < n && d < 5*time.Minute; i++ {
		d *= 2
	}
	return min(d, 5*time.Minute)
}

// build runs one attempt under the claim m. It returns nil when the outcome (ready or a
// permanent failure) is recorded and announced, errLostClaim when another builder took
// over, or the transient error.
func (b *Builder) build(ctx context.Context, log *slog.Logger, m fnhook.Module) error {
	start := time.Now()
	b.stats.started.Add(1)
	b.m.started.Inc()
	b.m.running.Inc()
	defer b.m.running.Dec()
	log = log.With("attempt", m.Attempts)
	log.Info("build started")

	bctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopHeartbeat := b.heartbeat(bctx, cancel, log, m)
	res, err := b.installAndUpload(bctx, log, m)
	stopHeartbeat()
	if errors.Is(context.Cause(bctx), errLostClaim) {
		err = errLostClaim
	}
	var perm *permanentError
	switch {
	case errors.As(err, &perm):
		m.Status, m.Error = fnhook.ModuleFailed, perm.message
	case errors.Is(err, errLostClaim):
		b.observe(start, "lost_claim")
		return err
	case err != nil:
		b.observe(start, "transient")
		return err
	default:
		m.Status, m.SHA256, m.Size, m.BuiltAt = fnhook.ModuleReady, res.SHA256, res.Size, time.Now().UTC()
	}
	if err := b.store.FinishModuleClaim(ctx, m, b.cfg.Owner); err != nil {
		if fnhook.ErrorCode(err) == fnhook.CodeConflict {
			if m.Status == fnhook.ModuleReady {
				log.Warn("claim lost after the upload; the other builder's record stands")
			}
			return errLostClaim
		}
		b.observe(start, "transient")
		return fmt.Errorf("record %s: %w", m.Status, err)
	}
	if m.Status == fnhook.ModuleReady {
		b.stats.succeeded.Add(1)
		b.m.succeeded.Inc()
		b.observe(start, "ready")
		log.Info("build succeeded", "sha256", m.SHA256, "size", m.Size, "took", time.Since(start).Round(time.Millisecond))
	} else {
		b.stats.failed.Add(1)
		b.m.failed.WithLabelValues(reasonPermanent).Inc()
		b.observe(start, "failed")
		log.Warn("build failed for good", "reason", perm.reason, "error", m.Error, "took", time.Since(start).Round(time.Millisecond))
	}
	if err := b.publish(ctx, m); err != nil {
		// Whoever sees the record next (a retry, or the redelivery) announces it.
		return fmt.Errorf("%w: %w", errUnannounced, err)
	}
	return nil
}

func (b *Builder) observe(start time.Time, outcome string) {
	b.m.duration.WithLabelValues(outcome).Observe(time.Since(start).Seconds())
}

// installAndUpload installs, packs and uploads; the result is the stored tarball's.
func (b *Builder) installAndUpload(ctx context.Context, log *slog.Logger, m fnhook.Module) (tarball.Result, error) {
	var res tarball.Result
	ws, err := b.npm.Install(ctx, m.Name, m.Version)
	if err != nil {
		var f *npm.Failure
		if errors.As(err, &f) && !f.Transient {
			return res, &permanentError{reason: f.Reason, message: f.Message}
		}
		return res, err
	}
	defer func() {
		if err := ws.Cleanup(); err != nil {
			log.Warn("could not remove the build folder", "dir", ws.Dir, "err", err)
		}
	}()
	// Outside the workspace, which the sandbox user owns; named so npm.Sweep finds leftovers.
	f, err := os.CreateTemp(b.cfg.WorkDir, "fnhook-build-*.tgz")
	if err != nil {
		return res, fmt.Errorf("tarball file: %w", err)
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	owner := -1
	if b.npm.Sandboxed() {
		owner = b.npm.UID()
	}
	res, err = tarball.Pack(ws.Prefix, f, tarball.Options{MaxBytes: b.cfg.MaxBytes, OwnerUID: owner})
	switch {
	case errors.Is(err, tarball.ErrTooLarge):
		return res, &permanentError{reason: "too_large", message: fmt.Sprintf(
			"%s with its dependencies packs to more than %d bytes, the builder's limit", fnhook.ModuleKey(m.Name, m.Version), b.cfg.MaxBytes)}
	case errors.Is(err, tarball.ErrUnsafe):
		return res, &permanentError{reason: "unsafe", message: err.Error()}
	case err != nil:
		return res, err
	}
	if len(res.Skipped) > 0 {
		log.Warn("left out of the tarball: special files or symlinks leaving node_modules", "entries", truncList(res.Skipped, 10))
	}
	// The object is shared: write it only while the claim is still ours.
	if err := b.store.RenewModuleClaim(ctx, m.Name, m.Version, b.cfg.Owner, b.cfg.ClaimTTL); err != nil {
		if fnhook.ErrorCode(err) == fnhook.CodeConflict {
			return res, errLostClaim
		}
		return res, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return res, err
	}
	if err := b.blobs.Put(ctx, fnhook.ModuleObjectKey(m.Name, m.Version), f, res.Size); err != nil {
		return res, fmt.Errorf("upload: %w", err)
	}
	b.stats.uploads.Add(1)
	b.m.stored.Add(float64(res.Size))
	return res, nil
}

// heartbeat renews the claim every third of its TTL until stopped. When the claim turns
// out to be someone else's, it cancels ctx with errLostClaim.
func (b *Builder) heartbeat(ctx context.Context, cancel context.CancelCauseFunc, log *slog.Logger, m fnhook.Module) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(max(b.cfg.ClaimTTL/3, 50*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			err := b.store.RenewModuleClaim(ctx, m.Name, m.Version, b.cfg.Owner, b.cfg.ClaimTTL)
			switch {
			case err == nil:
			case fnhook.ErrorCode(err) == fnhook.CodeConflict:
				cancel(errLostClaim)
				return
			case ctx.Err() == nil:
				// A blip: the claim outlives a few missed renewals, and the final record
				// is conditional on still holding it.
				log.Warn("could not renew the claim", "err", err)
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

// publish announces the recorded outcome m.
func (b *Builder) publish(ctx context.Context, m fnhook.Module) error {
	key := fnhook.EventModuleReady
	ev := fnhook.ModuleEvent{Name: m.Name, Version: m.Version}
	if m.Status == fnhook.ModuleFailed {
		key, ev.Error = fnhook.EventModuleFailed, m.Error
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := b.events.PublishEvent(pctx, key, ev); err != nil {
		return fmt.Errorf("publish %s for %s: %w", key, fnhook.ModuleKey(m.Name, m.Version), err)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func quoteBody(b []byte) string {
	const limit = 200
	if len(b) > limit {
		return fmt.Sprintf("%q…", b[:limit])
	}
	return fmt.Sprintf("%q", b)
}

func truncList(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("… %d more", len(s)-n))
	}
	return s
}

// keyLocks serialises the handling of one key within the process. Its map holds at most
// one entry per running handler, so it is bounded by the prefetch.
type keyLocks struct {
	mu sync.Mutex
	m  map[string]chan struct{}
}

// lock waits until no other handler holds key (or ctx ends), then holds it until the
// returned function is called.
func (k *keyLocks) lock(ctx context.Context, key string) (unlock func(), err error) {
	for {
		k.mu.Lock()
		if k.m == nil {
			k.m = map[string]chan struct{}{}
		}
		held, busy := k.m[key]
		if !busy {
			ch := make(chan struct{})
			k.m[key] = ch
			k.mu.Unlock()
			return func() {
				k.mu.Lock()
				delete(k.m, key)
				k.mu.Unlock()
				close(ch)
			}, nil
		}
		k.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-held:
		}
	}
}
