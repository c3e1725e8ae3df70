package metric

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Registry holds metrics in the order they were made.
type Registry struct {
	mu      sync.Mutex
	metrics []writer
	start   time.Time
}

// NewRegistry returns an empty registry that also reports the process.
func NewRegistry() *Registry { return &Registry{start: time.Now()} }

type writer interface{ write(w *bufio.Writer) }

func (r *Registry) add(m writer) {
	r.mu.Lock()
	r.metrics = append(r.metrics, m)
	r.mu.Unlock()
}

// desc is a metric's name, help and type.
type desc struct{ name, help, kind string }

func (d desc) header(w *bufio.Writer) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", d.name, escapeHelp(d.help), d.name, d.kind)
}

// value is a float64 updated atomically enough for metrics, under a mutex.
type value struct {
	mu sync.Mutex
	v  float64
}

func (v *value) add(d float64) { v.mu.Lock(); v.v += d; v.mu.Unlock() }
func (v *value) set(d float64) { v.mu.Lock(); v.v = d; v.mu.Unlock() }
func (v *value) get() float64  { v.mu.Lock(); defer v.mu.Unlock(); return v.v }

// Counter only goes up.
type Counter struct {
	desc
	value
}

// NewCounter makes and registers a counter.
func (r *Registry) NewCounter(name, help string) *Counter {
	c := &Counter{desc: desc{name, help, "counter"}}
	r.add(c)
	return c
}

// Inc adds 1.
func (c *Counter) Inc() { c.add(1) }

// Add adds d (d must not be negative).
func (c *Counter) Add(d float64) { c.add(d) }

func (c *Counter) write(w *bufio.Writer) {
	c.header(w)
	fmt.Fprintf(w, "%s %s\n", c.name, format(c.get()))
}

// Gauge goes up and down.
type Gauge struct {
	desc
	value
}

// NewGauge makes and registers a gauge.
func (r *Registry) NewGauge(name, help string) *Gauge {
	g := &Gauge{desc: desc{name, help, "gauge"}}
	r.add(g)
	return g
}

func (g *Gauge) Set(v float64) { g.set(v) }
func (g *Gauge) Inc()          { g.add(1) }
func (g *Gauge) Dec()          { g.add(-1) }

func (g *Gauge) write(w *bufio.Writer) {
	g.header(w)
	fmt.Fprintf(w, "%s %s\n", g.name, format(g.get()))
}

// GaugeFunc is a gauge whose value is computed at each scrape.
type GaugeFunc struct {
	desc
	f func() float64
}

// NewGaugeFunc makes and registers a gauge read from f.
func (r *Registry) NewGaugeFunc(name, help string, f func() float64) *GaugeFunc {
	g := &GaugeFunc{desc: desc{name, help, "gauge"}, f: f}
	r.add(g)
	return g
}

func (g *GaugeFunc) write(w *bufio.Writer) {
	g.header(w)
	fmt.Fprintf(w, "%s %s\n", g.name, format(g.f()))
}

// CounterVec is counters by the values of one label.
type CounterVec struct {
	desc
	label string
	mu    sync.Mutex
	byVal map[string]*Counter
}

// NewCounterVec makes and registers a counter vector with one label.
func (r *Registry) NewCounterVec(name, help, label string) *CounterVec {
	c := &CounterVec{desc: desc{name, help, "counter"}, label: label, byVal: map[string]*Counter{}}
	r.add(c)
	return c
}

// WithLabelValues returns the counter for the label value v.
func (c *CounterVec) WithLabelValues(v string) *Counter {
	c.mu.Lock()
	defer c.mu.Unlock()
	k, ok := c.byVal[v]
	if !ok {
		k = &Counter{desc: c.desc}
		c.byVal[v] = k
	}
	return k
}

func (c *CounterVec) write(w *bufio.Writer) {
	c.header(w)
	c.mu.Lock()
	keys := make([]string, 0, len(c.byVal))
	for k := range c.byVal {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "%s{%s=\"%s\"} %s\n", c.name, c.label, escapeLabel(k), format(c.byVal[k].get()))
	}
	c.mu.Unlock()
}

// Histogram counts observations into cumulative buckets.
type Histogram struct {
	desc
	mu      sync.Mutex
	bounds  []float64
	counts  []uint64
	sum     float64
	samples uint64
}

// NewHistogram makes and registers a histogram with the given upper bounds.
func (r *Registry) NewHistogram(name, help string, bounds []float64) *Histogram {
	h := &Histogram{desc: desc{name, help, "histogram"}, bounds: slices.Clone(bounds), counts: make([]uint64, len(bounds))}
	r.add(h)
	return h
}

// ExponentialBuckets returns count bounds from start, each factor times
// the one before.
func ExponentialBuckets(start, factor float64, count int) []float64 {
	out := make([]float64, count)
	for i := range out {
		out[i] = start
		start *= factor
	}
	return out
}

// Observe records v.
func (h *Histogram) Observe(v float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, b := range h.bounds {
		if v <= b {
			h.counts[i]++
		}
	}
	h.sum += v
	h.samples++
}

func (h *Histogram) write(w *bufio.Writer) {
	h.header(w)
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, b := range h.bounds {
		fmt.Fprintf(w, "%s_bucket{le=\"%s\"} %d\n", h.name, format(b), h.counts[i])
	}
	fmt.Fprintf(w, "%s_bucket{le=\"+Inf\"} %d\n%s_sum %s\n%s_count %d\n", h.name, h.samples, h.name, format(h.sum), h.name, h.samples)
}

// WriteTo writes every metric, then the process and Go runtime ones.
func (r *Registry) WriteTo(out io.Writer) (int64, error) {
	cw := &countWriter{w: out}
	w := bufio.NewWriter(cw)
	r.mu.Lock()
	ms := slices.Clone(r.metrics)
	r.mu.Unlock()
	for _, m := range ms {
		m.write(w)
	}
	r.writeProcess(w)
	err := w.Flush()
	return cw.n, err
}

// Handler serves the registry on GET.
func (r *Registry) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		r.WriteTo(w)
	})
}

// writeProcess writes the standard process_* metrics (from getrusage and
// /proc/self) and a few of the Go runtime's.
func (r *Registry) writeProcess(w *bufio.Writer) {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
		(&desc{"process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", "counter"}).header(w)
		fmt.Fprintf(w, "process_cpu_seconds_total %s\n", format(cpu))
	}
	if data, err := os.ReadFile("/proc/self/statm"); err == nil {
		if f := strings.Fields(string(data)); len(f) > 1 {
			if pages, err := strconv.ParseFloat(f[1], 64); err == nil {
				(&desc{"process_resident_memory_bytes", "Resident memory size in bytes.", "gauge"}).header(w)
				fmt.Fprintf(w, "process_resident_memory_bytes %s\n", format(pages*float64(os.Getpagesize())))
			}
		}
	}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		(&desc{"process_open_fds", "Number of open file descriptors.", "gauge"}).header(w)
		fmt.Fprintf(w, "process_open_fds %d\n", len(fds))
	}
	(&desc{"process_start_time_seconds", "Start time of the process since unix epoch in seconds.", "gauge"}).header(w)
	fmt.Fprintf(w, "process_start_time_seconds %s\n", format(float64(r.start.UnixNano())/1e9))
	(&desc{"go_goroutines", "Number of goroutines that currently exist.", "gauge"}).header(w)
	fmt.Fprintf(w, "go_goroutines %d\n", runtime.NumGoroutine())
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	(&desc{"go_memstats_heap_alloc_bytes", "Number of heap bytes allocated and still in use.", "gauge"}).header(w)
	fmt.Fprintf(w, "go_memstats_heap_alloc_bytes %d\n", ms.HeapAlloc)
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// format writes a float the way Prometheus does.
func format(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

func escapeHelp(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}

func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`).Replace(s)
}
