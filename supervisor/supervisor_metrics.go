package supervisor

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the supervisor's Prometheus metrics, on a registry of its
// own (no global state).
type metrics struct {
	reg               *prometheus.Registry
	claims            *prometheus.CounterVec
	running           prometheus.Gauge
	finished          *prometheus.CounterVec
	duration          prometheus.Histogram
	heartbeatFailures prometheus.Counter
	lastHeartbeat     atomic.Int64
	logLines          prometheus.Counter
	logBytes          prometheus.Counter
	logDropped        prometheus.Counter
	logLost           prometheus.Counter
	childCrashes      prometheus.Counter
	draining          prometheus.Gauge
	withheld          *prometheus.CounterVec
	abandoned         prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	const ns = "stroem_worker"
	m.claims = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "claims_total",
		Help: "Claim requests by result: step, empty (no work), rejected (422), error."}, []string{"result"})
	m.running = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "steps_running",
		Help: "Steps running now (one child process each)."})
	m.finished = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "steps_finished_total",
		Help: "Steps finished by result: succeeded, failed, crashed (child died), undelivered (result spooled)."}, []string{"result"})
	m.duration = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "step_duration_seconds",
		Help: "Wall time from fork to child exit.", Buckets: prometheus.ExponentialBuckets(0.005, 4, 12)})
	m.heartbeatFailures = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "heartbeat_failures_total",
		Help: "Heartbeats that got no 2xx answer."})
	heartbeatAge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "heartbeat_age_seconds",
		Help: "Seconds since the last successful heartbeat (-1 before the first)."}, func() float64 {
		last := m.lastHeartbeat.Load()
		if last == 0 {
			return -1
		}
		return time.Since(time.Unix(0, last)).Seconds()
	})
	m.logLines = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "log_lines_shipped_total",
		Help: "Step log lines delivered to the server (of finished steps)."})
	m.logBytes = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "log_bytes_shipped_total",
		Help: "Step log bytes delivered to the server (of finished steps)."})
	m.logDropped = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "log_lines_dropped_total",
		Help: "Step log lines the server refused permanently (should stay 0)."})
	m.logLost = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "log_lines_lost_total",
		Help: "Step log lines that could be neither spooled (disk full) nor sent (should stay 0)."})
	m.childCrashes = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "child_crashes_total",
		Help: "Child processes that died before reporting their step."})
	m.draining = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "draining",
		Help: "1 while the supervisor is stopping."})
	m.withheld = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "results_withheld_total",
		Help: "Spooled step results not sent, by reason: superseded (the step was claimed again here), stale (older than result_max_age_secs)."}, []string{"reason"})
	m.abandoned = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "worker_ids_abandoned_total",
		Help: "Worker ids given up after a claim got no answer (the claim may have been committed)."})
	m.reg.MustRegister(m.withheld, m.abandoned, m.claims, m.running, m.finished, m.duration, m.heartbeatFailures, heartbeatAge,
		m.logLines, m.logBytes, m.logDropped, m.logLost, m.childCrashes, m.draining,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
