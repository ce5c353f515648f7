package tenants

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	resolves   *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	assigns    prometheus.Counter
	evictions  prometheus.Counter
	noCapacity prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		resolves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fnhook_handler_resolves_total", Help: "Resolves answered, by outcome (warm, cold, or the error code).",
		}, []string{"outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fnhook_handler_resolve_seconds", Help: "Resolve latency, cold (assign or load needed) or warm.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20},
		}, []string{"kind"}),
		assigns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fnhook_handler_runner_assigns_total", Help: "Runners assigned to a tenant.",
		}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fnhook_handler_evictions_total", Help: "Tenants' runners ended to give the room to a new tenant on a full node.",
		}),
		noCapacity: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fnhook_handler_no_capacity_total", Help: "Resolves answered no_capacity: no runner could be had within FNHOOK_ASSIGN_WAIT.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.resolves, m.latency, m.assigns, m.evictions, m.noCapacity)
	}
	return m
}
