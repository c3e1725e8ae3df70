package redact_test

import (
	"encoding/base64"
	"net/url"
	"testing"

	"github.com/stroem-worker/stroem-worker/shared/redact"
)

func TestLine(t *testing.T) {
	t.Parallel()
	const tok = "s3cr3t-t0ken-value"
	multi := "-----BEGIN KEY-----\nAAAABBBBCCCC\n-----END KEY-----"
	r := redact.New(tok, "short", multi, "abc123456", "abc123456789", "ñandú-secreto")
	tests := []struct{ in, want string }{
		{"no secrets here", "no secrets here"},
		{"token=" + tok + " end", "token=*** end"},
		{tok + tok, "******"},
		{"b64 " + base64.StdEncoding.EncodeToString([]byte(tok)), "b64 ***"},
		{"url " + url.QueryEscape("p@ss w0rd!!"), "url " + url.QueryEscape("p@ss w0rd!!")},
		{"short is too short to mask", "short is too short to mask"},
		{"AAAABBBBCCCC", "***"},
		{"-----BEGIN KEY-----", "***"},
		{"longer abc123456789 wins", "longer *** wins"},
		{"", ""},
		{"pájaro ñandú-secreto", "pájaro ***"},
	}
	for _, tt := range tests {
		if got := string(r.Line([]byte(tt.in))); got != tt.want {
			t.Errorf("Line(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestURLEscapedForm(t *testing.T) {
	t.Parallel()
	r := redact.New("p@ss w0rd!!")
	in := "https://x/?p=" + url.QueryEscape("p@ss w0rd!!")
	if got, want := string(r.Line([]byte(in))), "https://x/?p=***"; got != want {
		t.Errorf("Line(%q) = %q, want %q", in, got, want)
	}
}

func TestFromEnv(t *testing.T) {
	t.Parallel()
	r := redact.FromEnv([]string{"API_KEY=key-value-123", "HOME=/home/user-1234", "DB_PASSWORD=hunter22", "X=worker-token-xyz"}, "worker-token-xyz")
	for in, want := range map[string]string{
		"key-value-123":    "***",
		"/home/user-1234":  "/home/user-1234",
		"pw hunter22":      "pw ***",
		"worker-token-xyz": "***",
	} {
		if got := string(r.Line([]byte(in))); got != want {
			t.Errorf("Line(%q) = %q, want %q", in, got, want)
		}
	}
	var none *redact.Redactor
	if got := string(none.Line([]byte("x"))); got != "x" {
		t.Errorf("nil Redactor Line(%q) = %q, want it unchanged", "x", got)
	}
	if redact.New("a", "bb") != nil {
		t.Errorf("New() of only short values = non-nil, want nil")
	}
}

func BenchmarkLineNoMatch(b *testing.B) {
	r := redact.New("s3cr3t-t0ken-value", "another-secret-value")
	line := []byte("2026-01-01 info: processed 1000 records in 12ms, nothing to report here at all")
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		r.Line(line)
	}
}
