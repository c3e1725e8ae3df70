package oneshot

import (
	"strings"
	"testing"
)

func TestParseOutputLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		line string
		want string
		ok   bool
	}{
		{`OUTPUT: {"greeting":"Hello"}`, `{"greeting":"Hello"}`, true},
		{`OUTPUT:{"a":1}`, `{"a":1}`, true},
		{`OUTPUT:   [1,2,3]  `, `[1,2,3]`, true},
		{`OUTPUT: "just a string"`, `"just a string"`, true},
		{`OUTPUT: 42`, `42`, true},
		{`OUTPUT: {not json}`, ``, false},
		{`OUTPUT:`, ``, false},
		{` OUTPUT: {"a":1}`, ``, false},
		{`output: {"a":1}`, ``, false},
		{`The OUTPUT: {"a":1}`, ``, false},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			t.Parallel()
			got, problem := parseOutputLine([]byte(tt.line))
			ok := problem == ""
			if ok != tt.ok || string(got) != tt.want {
				t.Errorf("parseOutputLine(%q) = %q, %v, want %q, %v", tt.line, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestStderrTail(t *testing.T) {
	t.Parallel()
	tail := newStderrTail(20)
	for _, l := range []string{"first line", "second", "third", "fourth"} {
		tail.add([]byte(l))
	}
	got := tail.String()
	if !strings.HasSuffix(got, "third\nfourth") || !strings.HasPrefix(got, "[") {
		t.Errorf("tail = %q, want an omission note then the last lines", got)
	}
	small := newStderrTail(100)
	small.add([]byte("a"))
	small.add([]byte("b"))
	if got := small.String(); got != "a\nb" {
		t.Errorf("tail = %q, want %q", got, "a\nb")
	}
	long := newStderrTail(10)
	long.add([]byte(strings.Repeat("x", 30)))
	if got := long.String(); !strings.HasSuffix(got, strings.Repeat("x", 10)) || !strings.Contains(got, "20 bytes") {
		t.Errorf("tail of a long line = %q, want its last 10 bytes and a note of 20 omitted", got)
	}
}
