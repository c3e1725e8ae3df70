package fakeserver

import (
	"crypto/subtle"
	"net/http"
	"strings"
)

// checkAuth applies the worker token middleware (§1.1) and returns the
// 401 message, or "" when the request may pass.
func (s *Server) checkAuth(r *http.Request) string {
	v, ok := r.Header["Authorization"]
	if !ok || len(v) == 0 || !visibleASCII(v[0]) {
		// axum's HeaderValue::to_str fails on anything else, and the
		// middleware treats that like an absent header.
		return "Missing authorization header"
	}
	tok, ok := strings.CutPrefix(v[0], "Bearer ")
	if !ok {
		return "Invalid authorization header format"
	}
	if subtle.ConstantTimeCompare([]byte(tok), []byte(s.token)) != 1 {
		return "Invalid worker token"
	}
	return ""
}

func visibleASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c >= 0x7f {
			return false
		}
	}
	return true
}
