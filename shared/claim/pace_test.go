package claim_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/stroem-worker/stroem-worker/shared/claim"
	"github.com/stroem-worker/stroem-worker/shared/config"
)

func TestPace(t *testing.T) {
	for _, tc := range []struct {
		name      string
		poll, max float64
		// steps: 'i' an empty claim (its wait is recorded), 'w' a step.
		steps string
		want  []time.Duration
	}{
		{"no maximum: always the poll interval", 1, 0, "iiiwi", []time.Duration{time.Second, time.Second, time.Second, time.Second}},
		{"maximum below the poll interval is the poll interval", 2, 1, "ii", []time.Duration{2 * time.Second, 2 * time.Second}},
		{"doubles up to the maximum, a step resets it", 1, 4, "iiiiwii",
			[]time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second, time.Second, 2 * time.Second}},
		{"a maximum that is no power of two caps the last doubling", 0.5, 3, "iiii",
			[]time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 3 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := claim.NewPace(&config.Config{PollIntervalSecs: tc.poll, PollIntervalMaxSecs: tc.max})
			var got []time.Duration
			for _, s := range tc.steps {
				if s == 'w' {
					p.Worked()
					continue
				}
				got = append(got, p.Idle())
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("waits (-want +got):\n%s", diff)
			}
		})
	}
}
