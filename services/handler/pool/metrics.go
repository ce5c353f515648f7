package pool

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	starts *prometheus.CounterVec
	ends   *prometheus.CounterVec
	ready  prometheus.Histogram
}

func newMetrics(p *Pool, reg prometheus.Registerer) *metrics {
	m := &metrics{
		starts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fnhook_handler_runner_starts_total", Help: "Runner jobs registered, by outcome.",
		}, []string{"outcome"}),
		ends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fnhook_handler_runner_ends_total", Help: "Runners ended, by reason (idle, evicted, deleted, unhealthy, failed_start, ...).",
		}, []string{"reason"}),
		ready: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "fnhook_handler_runner_ready_seconds", Help: "Time from registering a runner job to the runner answering.",
			Buckets: []float64{.25, .5, 1, 1.5, 2, 3, 5, 8, 13, 20, 30, 60},
		}),
	}
	if reg == nil {
		return m
	}
	locked := func(name, help string, value func() float64) prometheus.GaugeFunc {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
			p.mu.Lock()
			defer p.mu.Unlock()
			return value()
		})
	}
	reg.MustRegister(m.starts, m.ends, m.ready, counts{p},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fnhook_handler_pool_capacity",
			Help: "Most runners the node holds (FNHOOK_POOL_MAX_RUNNERS, or derived from the node's resources)."},
			func() float64 { return float64(p.cfg.MaxRunners) }),
		locked("fnhook_handler_pool_idle_target", "Idle runners the pool keeps ready now: FNHOOK_POOL_MIN_IDLE, more while new tenants arrive.",
			func() float64 { return float64(p.idleTargetLocked()) }),
		locked("fnhook_handler_pool_degraded", "1 when the last runner starts all failed and no runner is idle (/healthz says why), else 0.",
			func() float64 {
				if p.degradedLocked() != "" {
					return 1
				}
				return 0
			}),
		locked("fnhook_handler_pool_failed_starts", "Runner starts that failed in a row since a new runner last answered.",
			func() float64 { return float64(p.failedStarts) }),
		locked("fnhook_handler_pool_last_start_failure_timestamp_seconds", "Unix time of the last failed runner start (0: none).",
			func() float64 {
				if p.lastFailureAt.IsZero() {
					return 0
				}
				return float64(p.lastFailureAt.UnixNano()) / 1e9
			}),
	)
	return m
}

// counts exports the runners by state from one look at the pool, so that a scrape's
// idle, assigned and starting always add up to the runners the pool held at one moment.
type counts struct{ p *Pool }

var (
	idleDesc     = prometheus.NewDesc("fnhook_handler_pool_idle", "Idle, unassigned runners ready to take a tenant.", nil, nil)
	assignedDesc = prometheus.NewDesc("fnhook_handler_pool_assigned", "Runners taken by a tenant.", nil, nil)
	startingDesc = prometheus.NewDesc("fnhook_handler_pool_starting", "Runners registered and not ready yet.", nil, nil)
)

func (c counts) Describe(ch chan<- *prometheus.Desc) {
	ch <- idleDesc
	ch <- assignedDesc
	ch <- startingDesc
}

func (c counts) Collect(ch chan<- prometheus.Metric) {
	s, i, t := c.p.Counts()
	ch <- prometheus.MustNewConstMetric(idleDesc, prometheus.GaugeValue, float64(i))
	ch <- prometheus.MustNewConstMetric(assignedDesc, prometheus.GaugeValue, float64(t))
	ch <- prometheus.MustNewConstMetric(startingDesc, prometheus.GaugeValue, float64(s))
}
