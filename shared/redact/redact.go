package redact

import (
	"encoding/base64"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// Mask replaces every secret occurrence.
const Mask = "***"

// MinLen is the shortest value that is masked.
const MinLen = 6

// secretName matches env var names whose values are treated as secrets.
var secretName = regexp.MustCompile(`(?i)TOKEN|SECRET|PASSWORD|PASSWD|KEY|CREDENTIAL`)

// IsSecretName reports whether an environment variable of this name holds
// a secret.
func IsSecretName(name string) bool { return secretName.MatchString(name) }

// Redactor masks a fixed set of secrets. The zero value and nil mask
// nothing. It is safe for concurrent use.
type Redactor struct {
	r *strings.Replacer
	// first marks the first bytes of all patterns: a line holding none of
	// them is returned untouched without building a string.
	first [256]bool
}

// New builds a Redactor for the given secret values: each value, its
// lines (for multi-line secrets), and their base64 and URL-escaped forms,
// keeping only those at least MinLen long.
func New(values ...string) *Redactor {
	seen := map[string]bool{}
	var pats []string
	add := func(v string) {
		v = strings.TrimRight(v, "\r")
		if len(v) < MinLen || seen[v] {
			return
		}
		seen[v] = true
		pats = append(pats, v)
	}
	for _, v := range values {
		for _, form := range []string{v, base64.StdEncoding.EncodeToString([]byte(v)),
			base64.RawURLEncoding.EncodeToString([]byte(v)), url.QueryEscape(v)} {
			add(form)
			if strings.Contains(form, "\n") {
				for _, line := range strings.Split(form, "\n") {
					add(line)
				}
			}
		}
	}
	if len(pats) == 0 {
		return nil
	}
	// Longer first: the replacer tries patterns in argument order at each
	// position, so a secret that contains another is masked whole.
	slices.SortFunc(pats, func(a, b string) int { return len(b) - len(a) })
	args := make([]string, 0, 2*len(pats))
	red := &Redactor{}
	for _, p := range pats {
		args = append(args, p, Mask)
		red.first[p[0]] = true
	}
	red.r = strings.NewReplacer(args...)
	return red
}

// FromEnv collects the secrets of an environment (KEY=VALUE entries):
// values of variables with secret-looking names, plus extra values (the
// worker token).
func FromEnv(env []string, extra ...string) *Redactor {
	vals := slices.Clone(extra)
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if ok && IsSecretName(k) {
			vals = append(vals, v)
		}
	}
	return New(vals...)
}

// Line returns line with secrets masked. When nothing matches it returns
// line itself, without copying.
func (r *Redactor) Line(line []byte) []byte {
	if r == nil || !r.mayMatch(line) {
		return line
	}
	s := string(line)
	out := r.r.Replace(s)
	if len(out) == len(s) && out == s {
		return line
	}
	return []byte(out)
}

func (r *Redactor) mayMatch(line []byte) bool {
	for _, c := range line {
		if r.first[c] {
			return true
		}
	}
	return false
}
