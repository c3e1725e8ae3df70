package metric_test

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stroem-worker/stroem-worker/shared/metric"
)

func TestExposition(t *testing.T) {
	t.Parallel()
	r := metric.NewRegistry()
	c := r.NewCounter("x_total", "Things.\nCounted.")
	c.Inc()
	c.Add(2.5)
	v := r.NewCounterVec("y_total", "By result.", "result")
	v.WithLabelValues("b").Inc()
	v.WithLabelValues(`a"quote`).Add(2)
	g := r.NewGauge("z", "A gauge.")
	g.Inc()
	g.Inc()
	g.Dec()
	r.NewGaugeFunc("f", "Computed.", func() float64 { return -1 })
	h := r.NewHistogram("d_seconds", "Durations.", metric.ExponentialBuckets(0.1, 10, 2))
	h.Observe(0.05)
	h.Observe(0.5)
	h.Observe(5)
	var b strings.Builder
	if _, err := r.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	got := b.String()[:strings.Index(b.String(), "# HELP process_")]
	want := `# HELP x_total Things.\nCounted.
# TYPE x_total counter
x_total 3.5
# HELP y_total By result.
# TYPE y_total counter
y_total{result="a\"quote"} 2
y_total{result="b"} 1
# HELP z A gauge.
# TYPE z gauge
z 1
# HELP f Computed.
# TYPE f gauge
f -1
# HELP d_seconds Durations.
# TYPE d_seconds histogram
d_seconds_bucket{le="0.1"} 1
d_seconds_bucket{le="1"} 2
d_seconds_bucket{le="+Inf"} 3
d_seconds_sum 5.55
d_seconds_count 3
`
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("exposition (-want +got):\n%s", diff)
	}
	for _, name := range []string{"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "go_goroutines"} {
		if !strings.Contains(b.String(), "\n"+name+" ") {
			t.Errorf("exposition lacks %s", name)
		}
	}
}

func TestHandler(t *testing.T) {
	t.Parallel()
	r := metric.NewRegistry()
	r.NewCounter("a_total", "A.").Inc()
	rec := httptest.NewRecorder()
	r.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type = %q", ct)
	}
	if !strings.Contains(rec.Body.String(), "a_total 1\n") {
		t.Errorf("body lacks the counter:\n%s", rec.Body.String())
	}
}
