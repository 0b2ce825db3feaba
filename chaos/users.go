package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	shopv1 "github.com/opencoupon/coupon/examples/shop/proto/shop/v1"
)

// The workload keeps its users fresh so that a long run commits as much per
// minute as a short one: a user reaches the main template's per-user limit
// after a handful of claims and the service's daily cap (risk.max_daily_uses)
// after twenty coupon uses, and from then on every claim or Try of theirs is
// a refusal. The load's users come in cohorts, a new one every
// cohortOps operations; the scenarios' own transactions take a direct user
// for at most directUses coupons, then a new one.
const (
	cohortSize = 16
	opsPerUser = 12 // of the load, per cohort user (about six claims)
	cohortOps  = cohortSize * opsPerUser
	directUses = maxDailyUses / 2
	richUser   = int64(1_000_000_00)
	poorAmount = 300 // the first user of each cohort: its payments are refused
)

// users is the run's user pool; every user it ever handed out stays in all
// for the checks.
type users struct {
	mu      sync.Mutex
	all     []int64
	deposit map[int64]int64
	cohort  []int64
	ops     int  // load operations on the current cohort
	growing bool // a caller is provisioning the next cohort
	direct  int64
	directN int
	next    int64
	base    int64
}

func newUsers(index int) *users {
	return &users{deposit: map[int64]int64{}, base: int64(index+1) * 1_000_000}
}

// add funds a new user with amount.
func (r *run) addUser(ctx context.Context, amount int64) (int64, error) {
	p := r.pool
	p.mu.Lock()
	p.next++
	u := p.base + p.next
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := r.s.payments.Deposit(ctx, &shopv1.DepositRequest{UserId: u, Amount: amount}); err != nil {
		return 0, fmt.Errorf("deposit for user %d: %w", u, err)
	}
	p.mu.Lock()
	p.all = append(p.all, u)
	p.deposit[u] = amount
	p.mu.Unlock()
	return u, nil
}

// newCohort funds cohortSize users and makes them the load's current ones.
func (r *run) newCohort(ctx context.Context) error {
	c := make([]int64, 0, cohortSize)
	for i := range cohortSize {
		amount := richUser
		if i == 0 {
			amount = poorAmount
		}
		u, err := r.addUser(ctx, amount)
		if err != nil {
			return err
		}
		c = append(c, u)
	}
	p := r.pool
	p.mu.Lock()
	p.cohort, p.ops = c, 0
	p.mu.Unlock()
	return nil
}

// loadUser picks a user of the current cohort for one load operation and
// starts the next cohort once this one has had its share. A cohort that
// cannot be funded now (the shop is faulted) is tried again later.
func (r *run) loadUser(ctx context.Context, rng *rand.Rand) int64 {
	p := r.pool
	p.mu.Lock()
	p.ops++
	grow := p.ops >= cohortOps && !p.growing
	if grow {
		p.growing = true
	}
	u := p.cohort[rng.IntN(len(p.cohort))]
	p.mu.Unlock()
	if grow {
		err := r.newCohort(ctx)
		p.mu.Lock()
		p.growing = false
		if err != nil {
			p.ops = cohortOps / 2
		}
		p.mu.Unlock()
	}
	return u
}

// directUser is the user of a scenario's own transaction: the same one for
// directUses coupons, then a fresh one, so that no own transaction meets the
// daily cap unless a scenario means it to.
func (r *run) directUser(ctx context.Context) (int64, error) {
	p := r.pool
	p.mu.Lock()
	if p.direct != 0 && p.directN < directUses {
		p.directN++
		u := p.direct
		p.mu.Unlock()
		return u, nil
	}
	p.mu.Unlock()
	u, err := r.addUser(ctx, richUser)
	if err != nil {
		return 0, err
	}
	p.mu.Lock()
	p.direct, p.directN = u, 1
	p.mu.Unlock()
	return u, nil
}

// allUsers returns every user the run funded and what each was given.
func (r *run) allUsers() ([]int64, map[int64]int64) {
	p := r.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	dep := make(map[int64]int64, len(p.deposit))
	for u, a := range p.deposit {
		dep[u] = a
	}
	return append([]int64(nil), p.all...), dep
}

// cohortUsers returns the current cohort.
func (r *run) cohortUsers() []int64 {
	p := r.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int64(nil), p.cohort...)
}
