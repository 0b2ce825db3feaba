package webhook

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes of an attempt, the label of coupon_webhook_deliveries_total.
const (
	outcomeDelivered = "delivered" // 2xx
	outcomeFailed    = "failed"    // to be retried
	outcomeGaveUp    = "gave_up"   // failed past the horizon: terminated
	outcomeDropped   = "dropped"   // not an event (undecodable): terminated unsent
)

type metrics struct {
	deliveries *prometheus.CounterVec
	latency    prometheus.Histogram
	disabled   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coupon_webhook_deliveries_total",
			Help: "Webhook delivery attempts by outcome: delivered, failed (to be retried), gave_up (past the retry horizon), dropped (undecodable event).",
		}, []string{"outcome"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "coupon_webhook_delivery_duration_seconds",
			Help:    "Time from sending a webhook request to reading its response status.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		disabled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coupon_webhook_endpoints_disabled_total",
			Help: "Webhook endpoints disabled for failing too long.",
		}),
	}
	for _, o := range []string{outcomeDelivered, outcomeFailed, outcomeGaveUp, outcomeDropped} {
		m.deliveries.WithLabelValues(o)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.deliveries, m.latency, m.disabled} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register webhook metrics (one dispatcher per registry): %w", err)
		}
	}
	return m, nil
}
