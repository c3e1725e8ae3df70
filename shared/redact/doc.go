// Package redact masks secret values in step output before it leaves the
// worker: in the log spool, in the stderr quoted in a failure, anywhere.
//
// It works on whole lines (the log reader assembles lines across reads,
// so a secret split between two reads of the pipe is still caught). A
// multi-line secret is masked line by line. Values shorter than MinLen are
// not masked: masking "1" or "yes" would shred ordinary output and tell an
// observer the secret's value. It is not a guarantee against a step that
// transforms a secret (reverses, re-encodes) before printing it; base64 and
// URL-escaped forms are covered.
package redact
