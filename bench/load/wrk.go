package load

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/fnhook/fnhook/bench/report"
)

// Wrk runs `taskset -c <CPU> wrk -t1 -c<Concurrency> -d<Duration> --latency` when wrk
// is installed: one thread, pinned to one core like the Go generator (see Pin).
type Wrk struct {
	Path        string // the wrk binary; empty: not installed
	CPU         int    // the core wrk is pinned to
	Concurrency int
	Duration    time.Duration
}

// FindWrk returns the path of wrk, or "" when it is not installed.
func FindWrk() string {
	p, err := exec.LookPath("wrk")
	if err != nil {
		return ""
	}
	return p
}

// Run loads url with wrk and parses its report.
func (w Wrk) Run(ctx context.Context, url string) (report.Load, error) {
	secs := max(1, int(w.Duration.Seconds()))
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs+30)*time.Second)
	defer cancel()
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		return report.Load{}, fmt.Errorf("wrk is pinned to a core with taskset (util-linux): %w", err)
	}
	out, err := exec.CommandContext(ctx, taskset, "-c", strconv.Itoa(w.CPU), w.Path, "-t1", fmt.Sprintf("-c%d", w.Concurrency),
		fmt.Sprintf("-d%ds", secs), "--latency", url).CombinedOutput()
	if err != nil {
		return report.Load{}, fmt.Errorf("wrk on %s: %w: %.500s", url, err, out)
	}
	l, err := ParseWrk(string(out))
	if err != nil {
		return report.Load{}, fmt.Errorf("wrk on %s: %w", url, err)
	}
	l.Concurrency = w.Concurrency
	l.Seconds = float64(secs)
	return l, nil
}

// ParseWrk reads the parts of wrk's --latency report the bench uses: the latency
// distribution (50/90/99%), max latency, request count, errors and Requests/sec.
func ParseWrk(out string) (report.Load, error) {
	l := report.Load{Tool: "wrk"}
	var haveRPS, haveP50 bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch {
		case f[0] == "Latency" && len(f) >= 4: // Latency  avg  stdev  max  +/- stdev
			v, err := wrkDuration(f[3])
			if err != nil {
				return l, err
			}
			l.Latency.Max = v
			if mean, err := wrkDuration(f[1]); err == nil {
				l.Latency.Mean = mean
			}
		case len(f) == 2 && strings.HasSuffix(f[0], "%"):
			v, err := wrkDuration(f[1])
			if err != nil {
				return l, err
			}
			switch f[0] {
			case "50%":
				l.Latency.P50, haveP50 = v, true
			case "90%":
				l.Latency.P90 = v
			case "99%":
				l.Latency.P99 = v
			}
		case len(f) >= 4 && f[1] == "requests" && f[2] == "in": // 123456 requests in 10.00s, 12.3MB read
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return l, fmt.Errorf("request count %q: %w", f[0], err)
			}
			l.Requests = n
			l.Latency.N = int(n)
		case f[0] == "Requests/sec:" && len(f) == 2:
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return l, fmt.Errorf("requests/sec %q: %w", f[1], err)
			}
			l.RPS, haveRPS = v, true
		case f[0] == "Non-2xx" && len(f) >= 5: // Non-2xx or 3xx responses: 12
			n, _ := strconv.ParseInt(f[len(f)-1], 10, 64)
			l.Errors += n
		case f[0] == "Socket" && len(f) >= 2: // Socket errors: connect 0, read 0, write 0, timeout 0
			for i := 2; i+1 < len(f); i += 2 {
				n, _ := strconv.ParseInt(strings.TrimSuffix(f[i+1], ","), 10, 64)
				l.Errors += n
			}
		}
	}
	if !haveRPS || !haveP50 {
		return l, fmt.Errorf("no Requests/sec or 50%% latency in wrk's output: %.300s", out)
	}
	return l, nil
}

// wrkDuration parses wrk's durations ("412.00us", "1.23ms", "2.00s", "1.00m") into ms.
func wrkDuration(s string) (float64, error) {
	units := []struct {
		suffix string
		ms     float64
	}{{"us", 1e-3}, {"ms", 1}, {"s", 1000}, {"m", 60000}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(num, 64)
			if err != nil {
				return 0, fmt.Errorf("duration %q: %w", s, err)
			}
			return v * u.ms, nil
		}
	}
	return 0, fmt.Errorf("duration %q: unknown unit", s)
}
