package process

// State is the /proc state letter of pid ('R', 'S', 'Z', ...).
func State(pid int) (byte, error) {
	p, err := readStat(pid)
	return p.state, err
}

// ParseStat exposes parseStat as (pid, ppid, pgrp, state).
func ParseStat(b []byte) (pid, ppid, pgrp int, state byte, err error) {
	p, err := parseStat(b)
	return p.pid, p.ppid, p.pgrp, p.state, err
}
