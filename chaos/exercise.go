package chaos

import (
	"fmt"
	"math"
	"time"
)

// MinCommitsPerMinute is the floor of committed transactions per minute of
// workload (at least one in any run) below which a scenario counts as not
// exercised: its faults met too little committing traffic to prove
// anything about commits under faults, and the run fails as it would on a
// violation.
const MinCommitsPerMinute = 15

// exercise fills in what the scenario exercised: transactions committed
// and aborted (aborts by why), refused Tries and claims by reason, the
// rate, and whether the commits reached the floor.
func (res *ScenarioResult) exercise(ts []txnView, r *run, d time.Duration) {
	res.Aborts, res.RefusedTries, res.RefusedClaims = map[string]int{}, map[string]int{}, map[string]int{}
	for _, t := range ts {
		if t.status == statusSucceed {
			res.Committed++
			continue
		}
		res.Aborted++
		why := t.why
		if why == "" {
			why = abortFault
		}
		res.Aborts[why]++
		if t.shop && why == abortRefusal {
			res.RefusedTries[t.reason]++
		}
	}
	r.rec.mu.Lock()
	for reason, n := range r.rec.refusedTries {
		res.RefusedTries[reason] += n
	}
	for _, c := range r.rec.claims {
		if c.Outcome == refused {
			res.RefusedClaims[c.Reason]++
		}
	}
	r.rec.mu.Unlock()
	users, _ := r.allUsers()
	res.Users = len(users)
	minutes := d.Minutes()
	res.OpsPerSecond = round1(float64(r.rec.ops.Load()) / d.Seconds())
	res.CommitsPerMinute = round1(float64(res.Committed) / minutes)
	res.Floor = max(1, int(math.Ceil(MinCommitsPerMinute*minutes)))
	res.Exercised = res.Committed >= res.Floor
	if !res.Exercised {
		res.Notes = append(res.Notes, fmt.Sprintf("not exercised: %d commits, the floor is %d (%d a minute)", res.Committed, res.Floor, MinCommitsPerMinute))
	}
}

func round1(x float64) float64 { return math.Round(x*10) / 10 }
