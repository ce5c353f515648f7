package build

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Failure reasons of the failed-builds metric.
const (
	reasonPermanent    = "permanent"
	reasonTransient    = "transient"
	reasonDeadLettered = "dead_lettered"
)

type metrics struct {
	started   prometheus.Counter
	succeeded prometheus.Counter
	failed    *prometheus.CounterVec
	rejected  prometheus.Counter
	running   prometheus.Gauge
	duration  *prometheus.HistogramVec
	stored    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		started: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fnhook_builder_builds_started_total", Help: "npm installs started.",
		}),
		succeeded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fnhook_builder_builds_succeeded_total", Help: "Modules stored and recorded ready.",
		}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fnhook_builder_builds_failed_total",
			Help: "Failed builds by reason: permanent (recorded failed), transient (will be retried), dead_lettered (retries exhausted).",
		}, []string{"reason"}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fnhook_builder_messages_rejected_total", Help: "Invalid build messages sent to the dead-letter queue.",
		}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fnhook_builder_builds_running", Help: "Builds in progress.",
		}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fnhook_builder_build_duration_seconds", Help: "Time of one build attempt, by outcome.",
			Buckets: []float64{.5, 1, 2, 5, 10, 20, 30, 60, 120, 300},
		}, []string{"outcome"}),
		stored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fnhook_builder_stored_bytes_total", Help: "Bytes of module tarballs uploaded.",
		}),
	}
	for _, r := range []string{reasonPermanent, reasonTransient, reasonDeadLettered} {
		m.failed.WithLabelValues(r)
	}
	for _, c := range []prometheus.Collector{m.started, m.succeeded, m.failed, m.rejected, m.running, m.duration, m.stored} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Stats counts what one Builder did since it was made (for tests and logs; the same
// numbers are exported as Prometheus metrics).
type Stats struct {
	// Started counts npm installs started.
	Started int64
	// Succeeded counts modules this builder stored and recorded ready.
	Succeeded int64
	// Failed counts modules this builder recorded failed for good.
	Failed int64
	// Transient counts build attempts that failed transiently.
	Transient int64
	// DeadLettered counts messages dead-lettered after too many transient failures.
	DeadLettered int64
	// Rejected counts invalid messages dead-lettered.
	Rejected int64
	// Uploads counts tarballs written to the blob store.
	Uploads int64
	// Handled counts messages whose handling ended, whatever the outcome.
	Handled int64
}

type counters struct {
	started, succeeded, failed, transient, deadLettered, rejected, uploads, handled atomic.Int64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Started: c.started.Load(), Succeeded: c.succeeded.Load(), Failed: c.failed.Load(),
		Transient: c.transient.Load(), DeadLettered: c.deadLettered.Load(), Rejected: c.rejected.Load(),
		Uploads: c.uploads.Load(), Handled: c.handled.Load(),
	}
}
