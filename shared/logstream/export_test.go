package logstream

// SetMemoryLimit lowers a spool's memory limit for tests.
func SetMemoryLimit(s *Spool, n int) {
	s.mu.Lock()
	s.memLimit = n
	s.mu.Unlock()
}
