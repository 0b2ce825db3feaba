package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/opencoupon/coupon/internal/ctxtime"
)

// killNATS SIGKILLs nats-server, as a crash would; its store stays.
func (r *run) killNATS(why string) {
	r.s.faults.record(Fault{Target: "nats", Kind: "SIGKILL " + why})
	r.s.nats.kill()
}

// natsDown: nats-server SIGKILLed during the workload, kept down a few
// seconds and started again. Claims and payments go on; their events wait
// in the outboxes, and the relay must publish every one once NATS is back
// (invariant 7).
func natsDown(ctx context.Context, r *run) error {
	if err := r.at(ctx, 0.3); err != nil {
		return nil
	}
	r.killNATS("during the workload")
	_ = ctxtime.Sleep(ctx, r.hold(3*time.Second))
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if rows, err := r.s.outboxRows(rctx); err == nil {
		r.note(fmt.Sprintf("%d events waited in the outboxes when nats-server came back", total(rows)))
	}
	if err := r.s.restartNATS(rctx); err != nil {
		return err
	}
	return r.s.faults.heal(rctx)
}

// relayKillBatch is the relay's batch in relay-kill (events.batch): small,
// so that a drain is many publish–acknowledge–delete rounds and a kill
// lands between an acknowledgement and its delete as well as before it.
const relayKillBatch = 25

func (s *Stack) relayKillEnv() []string {
	return []string{fmt.Sprintf("COUPON_EVENTS_BATCH=%d", relayKillBatch)}
}

// relayKill: rounds, while the workload lasts, of a backlog built by
// nats-server down for a while, then nats-server back with its
// acknowledgements slowed by the coupon-nats proxy and the coupon service
// SIGKILLed twice part-way through its relay's drain of the backlog, each
// time restarted; a successor takes the outboxes over when the dead one's
// lease lapses and publishes what is left, resending what JetStream
// stored but the dead one had not deleted yet (JetStream drops the resend
// within its duplicate window; invariant 7 drops any past it by event ID).
func relayKill(ctx context.Context, r *run) error {
	rng := r.rng("relay-kill")
	if err := r.at(ctx, 0.15); err != nil {
		return nil
	}
	end := r.started.Add(r.duration * 8 / 10)
	backlog := max(time.Second, r.duration/10)
	kills := 0
	for round := 1; round == 1 || time.Now().Before(end); round++ {
		if ctx.Err() != nil {
			break
		}
		n, err := r.relayKillRound(ctx, rng, round, backlog)
		kills += n
		if err != nil {
			return err
		}
	}
	r.note(fmt.Sprintf("the coupon service was SIGKILLed %d times while its relay drained a backlog", kills))
	return nil
}

// relayKillsPerRound is how many times relay-kill kills the coupon service
// during the drain of one backlog.
const relayKillsPerRound = 2

// relayKillRound is one round of relay-kill; it returns the kills.
func (r *run) relayKillRound(ctx context.Context, rng *rand.Rand, round int, backlog time.Duration) (int, error) {
	r.killNATS("to build a backlog")
	_ = ctxtime.Sleep(ctx, backlog)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	if err := r.s.faults.toxic(proxyNATS, "latency", "downstream", map[string]any{"latency": 40}); err != nil {
		return 0, err
	}
	if err := r.s.restartNATS(rctx); err != nil {
		return 0, err
	}
	kills := 0
	for range relayKillsPerRound {
		// The kill lands somewhere in the drain: after 5 to 90 % of it.
		peak, left, started, err := r.s.awaitDrain(rctx, 20*time.Second, 0.1+0.85*rng.Float64())
		if err != nil {
			return kills, err
		}
		if !started || left == 0 {
			what := fmt.Sprintf("the relay drained all %d events before a kill could land", peak)
			if !started {
				what = fmt.Sprintf("the backlog (at most %d, now %d) did not fall to the kill point within 20s", peak, left)
			}
			r.note(fmt.Sprintf("round %d: %s", round, what))
			break
		}
		r.s.faults.record(Fault{Target: "coupon", Kind: fmt.Sprintf("SIGKILL while its relay drains (%d of %d events left)", left, peak)})
		r.s.coupon.kill()
		kills++
		_ = ctxtime.Sleep(ctx, 300*time.Millisecond)
		if err := r.s.restartCoupon(rctx); err != nil {
			return kills, err
		}
	}
	return kills, r.s.faults.heal(rctx)
}

// awaitDrain waits until the relay has drained part of the outboxes' backlog:
// their total has fallen below the highest seen, to frac of it or less.
// It returns that highest total and the current one, and started false
// when the total did not fall so far within timeout. Left is 0 when the
// outboxes emptied between two readings.
func (s *Stack) awaitDrain(ctx context.Context, timeout time.Duration, frac float64) (peak, left int64, started bool, err error) {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		rows, err := s.outboxRows(ctx)
		if err != nil {
			return 0, 0, false, err
		}
		n := total(rows)
		if n < peak && float64(n) <= frac*float64(peak) {
			return peak, n, true, nil
		}
		peak = max(peak, n)
		if time.Now().After(deadline) {
			return peak, n, false, nil
		}
		select {
		case <-ctx.Done():
			return peak, n, false, ctx.Err()
		case <-tick.C:
		}
	}
}
