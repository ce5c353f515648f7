package tenants

import (
	"context"
	"fmt"
	"time"

	"github.com/fnhook/fnhook/services/handler/pool"
)

// Run reads the log stream of every tenant's runner into the handler's log and ends the
// runners of tenants idle for IdleTimeout, until ctx ends.
func (t *Table) Run(ctx context.Context) {
	t.mu.Lock()
	t.ctx = ctx
	for _, run := range t.byJob {
		t.followLocked(run)
	}
	t.mu.Unlock()
	every := min(max(t.cfg.IdleTimeout/4, 100*time.Millisecond), 30*time.Second)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			t.mu.Lock()
			t.stopped = true // no reader starts after this
			t.mu.Unlock()
			t.follows.Wait()
			return
		case <-tick.C:
			t.reapIdle(ctx)
		}
	}
}

// reapIdle ends the runners unused for IdleTimeout. The runner's own account of its last
// call wins over the table's last resolve (calls through the gateway's cached routes are
// not seen here); a runner that does not answer is judged by the last resolve.
func (t *Table) reapIdle(ctx context.Context) {
	now := t.now()
	cands := t.candidates(func(run *runner) bool { return now.Sub(run.lastUsed) >= t.cfg.IdleTimeout })
	for _, c := range cands {
		a, err := t.activity(ctx, c.run)
		if ctx.Err() != nil {
			return
		}
		idleFor := t.now().Sub(a.last)
		if err == nil && (a.busy || idleFor < t.cfg.IdleTimeout) {
			continue
		}
		detail := fmt.Sprintf("no call for %s", t.now().Sub(c.lastUsed).Round(time.Second))
		if err != nil {
			detail += fmt.Sprintf(" (state: %v)", err)
		}
		t.retire(c, pool.EndIdle, detail)
	}
}
