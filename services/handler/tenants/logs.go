package tenants

import (
	"context"
	"log/slog"
	"time"

	fnhook "github.com/fnhook/fnhook/libs"
	"github.com/fnhook/fnhook/libs/runnerapi"
)

// logGrace bounds how long a runner's log stream is still read after the runner left its
// tenant: its last call's lines arrive while it stops; a read fails once it is gone.
const logGrace = 15 * time.Second

// followLocked starts reading the runner's log stream into the handler's log, until the
// runner is gone or the table stops (Run's context). Delivery is at least once: a handler
// that restarts reads a recovered runner's stream from its oldest line again.
func (t *Table) followLocked(run *runner) {
	if t.ctx == nil || t.stopped || run.stopLogs != nil {
		return // Run starts it, or has returned
	}
	ctx, cancel := context.WithCancel(t.ctx)
	run.stopLogs = cancel
	t.follows.Add(1)
	go func() {
		defer t.follows.Done()
		defer cancel()
		t.follow(ctx, run)
	}()
}

// unfollowLocked lets the log stream of a runner that left its tenant be read a while
// longer, then stops it.
func (t *Table) unfollowLocked(run *runner) {
	run.detached.Store(true)
	if run.stopLogs != nil {
		time.AfterFunc(logGrace, run.stopLogs)
	}
}

func (t *Table) follow(ctx context.Context, run *runner) {
	var next int64
	delay := 250 * time.Millisecond
	for {
		reached, err := t.runners.FollowLogs(ctx, run.API(), next, 0, func(b runnerapi.LogBatch) error {
			t.logLines(run.tenant, b)
			return nil
		})
		if reached > next {
			next, delay = reached, 250*time.Millisecond
		}
		if ctx.Err() != nil || run.detached.Load() {
			return // stopped, or the runner ended after leaving its tenant
		}
		switch {
		case runnerapi.IsCode(err, fnhook.CodeNotFound):
			t.log.Warn("runner has no log stream: its tenant's logs are not read", "tenant", run.tenant, "job", run.JobID)
			return
		case runnerapi.IsCode(err, fnhook.CodeInvalidCursor):
			next = 0
		}
		t.log.Debug("runner log stream broke; resuming", "tenant", run.tenant, "job", run.JobID, "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// logLines writes a batch of a runner's lines as the handler's own JSON lines, each with
// the tenant (the table's word), its source, function, version and request id (the
// runner's; tenant code can make up the last three of its own lines), and the level
// mapped to the handler's.
func (t *Table) logLines(tenant string, b runnerapi.LogBatch) {
	if b.Missed > 0 {
		t.log.Warn("tenant log lines lost", "tenant", tenant, "missed", b.Missed, "dropped_total", b.Dropped)
	}
	for _, l := range b.Lines {
		attrs := []slog.Attr{
			slog.String("log", "tenant"), slog.String("tenant", tenant), slog.String("source", l.Source),
			slog.String("function", l.Function), slog.Int("version", l.Version), slog.String("request_id", l.RequestID),
			slog.String("logged_at", l.TS), slog.Int64("seq", l.Seq),
		}
		if len(l.Attrs) > 0 {
			attrs = append(attrs, slog.Any("attrs", l.Attrs))
		}
		t.log.LogAttrs(context.Background(), logLevel(l.Level), l.Msg, attrs...)
	}
}

// logLevel maps a runner line's level (log, info, warn, error) to the handler's.
func logLevel(level string) slog.Level {
	switch level {
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}
