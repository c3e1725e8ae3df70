package delivery

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Root is the directory holding the spools of a worker home.
func Root(workspaceDir string) string { return filepath.Join(workspaceDir, "spool") }

// maxPart bounds one part of a key, so that a key plus ".lock" stays far
// below the 255 bytes a file name may have, whatever the step is called.
const maxPart = 96

// StepKey names every attempt of a step: the job id and the step name,
// each kept readable (as hex) when short and hashed when long, so any
// step name (unicode, slashes, "process[0]", 10 KB) makes a safe name.
func StepKey(jobID, step string) string {
	return part(jobID, true) + "_" + part(step, false)
}

// Key names one attempt's spool, lock and step directory.
func Key(jobID, step, attempt string) string {
	return StepKey(jobID, step) + "_" + part(attempt, true)
}

// part encodes s as one harmless piece of a file name without '_'.
func part(s string, plainOK bool) string {
	if plainOK && s != "" && len(s) <= maxPart && plain(s) {
		return s
	}
	h := hex.EncodeToString([]byte(s))
	if len(h) < maxPart {
		return "x" + h
	}
	sum := sha256.Sum256([]byte(s))
	return "h" + hex.EncodeToString(sum[:20])
}

func plain(s string) bool {
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// NewAttempt returns a fresh attempt id: the time in base 36 (so spools of
// one step sort by age) and 32 random bits.
func NewAttempt() string {
	var b [4]byte
	rand.Read(b[:])
	return strconv.FormatInt(time.Now().UnixMilli(), 36) + hex.EncodeToString(b[:])
}

// isAttemptOf reports whether spool key belongs to an attempt of the step
// named by stepKey.
func isAttemptOf(key, stepKey string) bool {
	rest, ok := strings.CutPrefix(key, stepKey+"_")
	return ok && rest != "" && !strings.Contains(rest, "_")
}
