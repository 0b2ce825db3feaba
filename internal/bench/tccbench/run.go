package tccbench

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// txTimeout bounds one global transaction as the client sees it.
	txTimeout = 15 * time.Second
	// settleTimeout bounds the wait for the last Confirms; it covers a
	// Confirm that failed once and waits for DTM's retry (10s by default).
	settleTimeout = time.Minute
)

// result is what one scenario measured.
type result struct {
	name string
	// committed counts the global transactions that ended within the
	// measured window of length elapsed; lat are their latencies, sorted.
	committed int
	elapsed   time.Duration
	lat       []time.Duration
	// errors counts failed transactions over the whole run, warmups
	// included; errs groups them by message.
	errors int
	errs   map[string]int
	// unsettled counts committed transactions whose effects were still
	// missing when the wait for them ended; settle is the longest it took,
	// after a slice's last transaction, for all to be there.
	unsettled int
	settle    time.Duration
	// ranOut: a round's prepared items ran out before its time did.
	ranOut bool
}

func (r *result) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.committed) / r.elapsed.Seconds()
}

// percentile is the latency that q of the transactions did not exceed.
func (r *result) percentile(q float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(r.lat)))) - 1
	return r.lat[max(i, 0)]
}

func (r *result) line(store string) string {
	return fmt.Sprintf("tcc store=%s scenario=%-15s tx=%-7d tx/s=%-6.0f p50=%s p95=%s p99=%s errors=%d settle=%s",
		store, r.name, r.committed, r.rate(), ms(r.percentile(0.50)), ms(r.percentile(0.95)), ms(r.percentile(0.99)),
		r.errors, r.settle.Round(10*time.Millisecond))
}

func ms(d time.Duration) string {
	m := float64(d) / float64(time.Millisecond)
	if m < 10 {
		return strconv.FormatFloat(m, 'f', 1, 64) + "ms"
	}
	return strconv.FormatFloat(m, 'f', 0, 64) + "ms"
}

// topErrors lists the k most frequent error messages with their counts.
func (r *result) topErrors(k int) []string {
	msgs := slices.SortedFunc(maps.Keys(r.errs), func(a, b string) int { return cmp.Compare(r.errs[b], r.errs[a]) })
	var out []string
	for _, m := range msgs[:min(k, len(msgs))] {
		out = append(out, fmt.Sprintf("%d× %s", r.errs[m], m))
	}
	return out
}

// worker is one client's record.
type worker struct {
	committed []int // items
	ends      []time.Time
	lat       []time.Duration
	errs      map[string]int
}

// slice runs round of the scenario into r: --concurrency clients, each
// running one global transaction after another on the next unused item of
// the round's share, for --warmup unmeasured and then its share of
// --duration measured. Then it waits until every committed transaction has
// all its effects, so that the next slice starts with no Confirm pending.
func (b *bench) slice(ctx context.Context, sc *scenario, round int, r *result) error {
	lo, hi := round*sc.n/b.o.rounds, (round+1)*sc.n/b.o.rounds
	var next atomic.Int64
	next.Store(int64(lo))
	var ranOutAt atomic.Int64 // unix nanoseconds; 0 while items last
	from := time.Now().Add(b.o.warmup)
	to := from.Add(b.o.duration / time.Duration(b.o.rounds))
	calls.take()
	b.log.Info("slice starts", "scenario", sc.name, "round", round, "items", hi-lo, "concurrency", b.o.concurrency)
	if b.o.warmup > 0 {
		t := time.AfterFunc(b.o.warmup, func() { b.log.Info("measured window starts", "scenario", sc.name, "round", round) })
		defer t.Stop()
	}
	workers := make([]worker, b.o.concurrency)
	var wg sync.WaitGroup
	for w := range workers {
		wk := &workers[w]
		wk.errs = map[string]int{}
		wg.Go(func() {
			for ctx.Err() == nil && ranOutAt.Load() == 0 {
				began := time.Now()
				if !began.Before(to) {
					return
				}
				i := int(next.Add(1) - 1)
				if i >= hi {
					ranOutAt.CompareAndSwap(0, began.UnixNano())
					return
				}
				tctx, cancel := context.WithTimeout(ctx, txTimeout)
				err := sc.tx(tctx, b.runID+"-"+sc.short+"-"+strconv.Itoa(i), i)
				cancel()
				if err != nil {
					if ctx.Err() == nil {
						wk.errs[err.Error()]++
					}
					continue
				}
				end := time.Now()
				wk.committed = append(wk.committed, i)
				wk.ends = append(wk.ends, end)
				wk.lat = append(wk.lat, end.Sub(began))
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	finished := time.Now()
	b.log.Info("measured window ended", "scenario", sc.name, "round", round, "mean_calls", calls.take())
	b.logPools(sc.name)

	if at := ranOutAt.Load(); at != 0 {
		r.ranOut = true
		to = time.Unix(0, at)
		if !to.After(from) {
			return fmt.Errorf("the %d items prepared for round %d ran out during the warmup; raise --max-rate", hi-lo, round)
		}
	}
	r.elapsed += to.Sub(from)
	var committed []int
	for _, wk := range workers {
		committed = append(committed, wk.committed...)
		for j, end := range wk.ends {
			if !end.Before(from) && end.Before(to) {
				r.lat = append(r.lat, wk.lat[j])
			}
		}
		for m, n := range wk.errs {
			r.errs[m] += n
			r.errors += n
		}
	}
	r.committed = len(r.lat)

	missing, err := b.settle(ctx, sc, committed)
	if err != nil {
		return err
	}
	r.unsettled += len(missing)
	r.settle = max(r.settle, time.Since(finished))
	if len(missing) > 0 {
		r.errs[fmt.Sprintf("committed but not settled after %s, e.g. item %d", settleTimeout, missing[0])] += len(missing)
	}
	return nil
}

// settle polls until every committed item's transaction has all its
// effects, and returns those that still lack some after settleTimeout.
func (b *bench) settle(ctx context.Context, sc *scenario, committed []int) ([]int, error) {
	deadline := time.Now().Add(settleTimeout)
	for {
		done, err := sc.settled(ctx)
		if err != nil {
			return nil, err
		}
		committed = slices.DeleteFunc(committed, done)
		if len(committed) == 0 || time.Now().After(deadline) {
			return committed, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
