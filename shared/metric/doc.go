// Package metric keeps a process's counters, gauges and histograms and
// writes them in the Prometheus text exposition format (version 0.0.4),
// with the standard process_* and a few go_* metrics.
//
// It replaces prometheus/client_golang, whose package init (protobuf
// registration and more) cost about 5 ms of CPU in every process of this
// binary, including each claim-and-run child that runs one step: here
// nothing happens until a metric is made. It is not a client library for
// others: no protobuf format, no push, one label per vector.
package metric
