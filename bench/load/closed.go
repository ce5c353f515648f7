// Package load drives HTTP load at a server: the bench's own closed-loop generator and,
// when installed, wrk. Both report through report.Load.
package load

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fnhook/fnhook/bench/report"
	"github.com/fnhook/fnhook/bench/stats"
)

// Closed is a closed-loop load: Concurrency workers each send one request, read the whole
// answer, and send the next, over keep-alive connections.
type Closed struct {
	Concurrency int
	Warmup      time.Duration
	Duration    time.Duration
	// MaxSamples bounds the latencies kept per worker (the count goes on past it).
	MaxSamples int
	// OnWindow, when set, is called (from a goroutine of its own) as the measured window
	// starts, with end false, and as it ends, with end true: to read what the server used
	// over exactly the window whose requests are counted.
	OnWindow func(end bool)
}

// NewClient is an HTTP client for load: keep-alive with an idle connection per worker,
// no compression, bounded timeouts.
func NewClient(concurrency int) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:          concurrency * 2,
			MaxIdleConnsPerHost:   concurrency * 2,
			MaxConnsPerHost:       0,
			IdleConnTimeout:       90 * time.Second,
			DisableCompression:    true,
			ResponseHeaderTimeout: 30 * time.Second,
		},
	}
}

// Run loads url for Warmup (not counted) then Duration (counted). Any answer but 2xx, or
// a transport error, counts as an error and is left out of the latencies.
func (c Closed) Run(ctx context.Context, url string) (report.Load, error) {
	if c.Concurrency < 1 || c.Duration <= 0 {
		return report.Load{}, fmt.Errorf("closed load: concurrency %d and duration %s must be positive", c.Concurrency, c.Duration)
	}
	maxSamples := c.MaxSamples
	if maxSamples <= 0 {
		maxSamples = 2_000_000
	}
	client := NewClient(c.Concurrency)
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	start := time.Now()
	from, until := start.Add(c.Warmup), start.Add(c.Warmup+c.Duration)
	var (
		requests, errs atomic.Int64
		firstErr       atomic.Pointer[string]
		wg             sync.WaitGroup
	)
	samples := make([][]time.Duration, c.Concurrency)
	if c.OnWindow != nil {
		wg.Go(func() {
			for _, edge := range []struct {
				at  time.Time
				end bool
			}{{from, false}, {until, true}} {
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Until(edge.at)):
				}
				c.OnWindow(edge.end)
			}
		})
	}
	for w := range c.Concurrency {
		wg.Go(func() {
			own := make([]time.Duration, 0, min(maxSamples, 1<<16))
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(until) {
					break
				}
				err := get(ctx, client, url)
				t1 := time.Now()
				if t0.Before(from) || t1.After(until) {
					continue // warm-up, or straddles the end of the window
				}
				requests.Add(1)
				if err != nil {
					errs.Add(1)
					msg := err.Error()
					firstErr.CompareAndSwap(nil, &msg)
					continue
				}
				if len(own) < maxSamples {
					own = append(own, t1.Sub(t0))
				}
			}
			samples[w] = own
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return report.Load{}, fmt.Errorf("closed load on %s: %w", url, err)
	}
	var all []time.Duration
	for _, s := range samples {
		all = append(all, s...)
	}
	l := report.Load{
		Tool:        "go",
		Concurrency: c.Concurrency,
		Seconds:     c.Duration.Seconds(),
		Requests:    requests.Load(),
		Errors:      errs.Load(),
		Latency:     stats.Summarize(all),
	}
	l.RPS = float64(l.Requests-l.Errors) / c.Duration.Seconds()
	if p := firstErr.Load(); p != nil {
		l.FirstError = *p
	}
	return l, nil
}

// get sends one GET and drains the answer so the connection is reused.
func get(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("status %d: %.200s", resp.StatusCode, body)
	}
	return nil
}
