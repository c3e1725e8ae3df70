package supervisor

import (
	"sync/atomic"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/metric"
)

// metrics are the supervisor's Prometheus metrics, on a registry of its
// own (no global state).
type metrics struct {
	reg               *metric.Registry
	claims            *metric.CounterVec
	running           *metric.Gauge
	finished          *metric.CounterVec
	duration          *metric.Histogram
	heartbeatFailures *metric.Counter
	lastHeartbeat     atomic.Int64
	logLines          *metric.Counter
	logBytes          *metric.Counter
	logDropped        *metric.Counter
	logLost           *metric.Counter
	childCrashes      *metric.Counter
	draining          *metric.Gauge
	withheld          *metric.CounterVec
	abandoned         *metric.Counter
}

func newMetrics() *metrics {
	m := &metrics{reg: metric.NewRegistry()}
	const ns = "stroem_worker"
	m.claims = m.reg.NewCounterVec(ns+"_claims_total", "Claim requests by result: step, empty (no work), rejected (422), error.", "result")
	m.running = m.reg.NewGauge(ns+"_steps_running", "Steps running now (one child process each).")
	m.finished = m.reg.NewCounterVec(ns+"_steps_finished_total", "Steps finished by result: succeeded, failed, crashed (child died), undelivered (result spooled).", "result")
	m.duration = m.reg.NewHistogram(ns+"_step_duration_seconds", "Wall time from fork to child exit.", metric.ExponentialBuckets(0.005, 4, 12))
	m.heartbeatFailures = m.reg.NewCounter(ns+"_heartbeat_failures_total", "Heartbeats that got no 2xx answer.")
	m.reg.NewGaugeFunc(ns+"_heartbeat_age_seconds", "Seconds since the last successful heartbeat (-1 before the first).", func() float64 {
		last := m.lastHeartbeat.Load()
		if last == 0 {
			return -1
		}
		return time.Since(time.Unix(0, last)).Seconds()
	})
	m.logLines = m.reg.NewCounter(ns+"_log_lines_shipped_total", "Step log lines delivered to the server (of finished steps).")
	m.logBytes = m.reg.NewCounter(ns+"_log_bytes_shipped_total", "Step log bytes delivered to the server (of finished steps).")
	m.logDropped = m.reg.NewCounter(ns+"_log_lines_dropped_total", "Step log lines the server refused permanently (should stay 0).")
	m.logLost = m.reg.NewCounter(ns+"_log_lines_lost_total", "Step log lines that could be neither spooled (disk full) nor sent (should stay 0).")
	m.childCrashes = m.reg.NewCounter(ns+"_child_crashes_total", "Child processes that died before reporting their step.")
	m.draining = m.reg.NewGauge(ns+"_draining", "1 while the supervisor is stopping.")
	m.withheld = m.reg.NewCounterVec(ns+"_results_withheld_total", "Spooled step results not sent, by reason: superseded (the step was claimed again here), stale (older than result_max_age_secs).", "reason")
	m.abandoned = m.reg.NewCounter(ns+"_worker_ids_abandoned_total", "Worker ids given up after a claim got no answer (the claim may have been committed).")
	return m
}
