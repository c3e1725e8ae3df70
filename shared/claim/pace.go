package claim

import (
	"time"

	"github.com/stroem-worker/stroem-worker/shared/config"
)

// Pace spaces the claims of an idle worker: the wait starts at
// poll_interval_secs and doubles after every claim that brought no step,
// up to poll_interval_max_secs; a step resets it. With no maximum set the
// wait is always the poll interval.
type Pace struct {
	poll, max, wait time.Duration
}

// NewPace returns the pace cfg asks for.
func NewPace(cfg *config.Config) *Pace {
	p := cfg.PollInterval()
	return &Pace{poll: p, max: max(p, cfg.PollIntervalMax()), wait: p}
}

// Worked records a claim that brought a step: the next empty claim waits
// one poll interval again.
func (p *Pace) Worked() { p.wait = p.poll }

// Idle returns how long to wait after a claim that brought no step (or
// failed), and lengthens the wait after the next one.
func (p *Pace) Idle() time.Duration {
	d := p.wait
	p.wait = min(2*p.wait, p.max)
	return d
}
