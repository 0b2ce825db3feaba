package claimbench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"

	"github.com/opencoupon/coupon/internal/bench/proccpu"
)

// Result is what one scenario measured.
type Result struct {
	Kind     string `json:"kind"` // claim, read or baseline
	Scenario string `json:"scenario"`
	Clients  int    `json:"clients"`
	// Calls counts the measured calls; OK the new coupons (claims), the
	// complete answers (reads) or the rows written (baseline).
	Calls int64 `json:"calls"`
	OK    int64 `json:"ok"`
	// Replays counts retried request IDs answered with their first coupon.
	Replays        int64            `json:"replays,omitempty"`
	Errors         map[string]int64 `json:"errors"`
	ElapsedSeconds float64          `json:"elapsed_s"`
	// PerSecond is OK per second: claims/s, reads/s or ops/s.
	PerSecond      float64 `json:"per_second"`
	CallsPerSecond float64 `json:"calls_per_second"`
	P50ms          float64 `json:"p50_ms"`
	P95ms          float64 `json:"p95_ms"`
	P99ms          float64 `json:"p99_ms"`
	MaxMs          float64 `json:"max_ms"`
	// RSSPeakMB is the highest VmRSS of the service sampled during the scenario.
	RSSPeakMB float64 `json:"rss_peak_mb,omitempty"`
	// Pool is the baseline's MySQL pool per shard database.
	Pool int `json:"pool,omitempty"`
	// ServiceCPUus and MariaDBCPUus are the CPU time the service and
	// MariaDB spent per measured call, in microseconds.
	ServiceCPUus float64 `json:"service_cpu_us_per_op,omitempty"`
	MariaDBCPUus float64 `json:"mariadb_cpu_us_per_op,omitempty"`
}

// phase is how long a scenario runs and with how many clients.
type phase struct {
	clients int
	// warmup is unmeasured load before the measured duration.
	warmup   time.Duration
	duration time.Duration
	// attempts, when > 0, bounds the run by units instead of time, all measured.
	attempts int64
	// pid is the process whose RSS is sampled; 0 samples nothing.
	pid int
	// mariadb is MariaDB's pid, whose CPU time is measured; 0: not measured.
	mariadb int
}

// unit performs one unit of load (one or a few calls) and records them.
type unit func(ctx context.Context, rec *recorder)

// run runs one unit at a time on each of the clients until the phase ends.
// A cancelled ctx stops it early with ctx's error.
func (ph phase) run(ctx context.Context, newUnit func(i int) unit) (*Result, error) {
	start := time.Now()
	from := start
	if ph.attempts == 0 {
		from = start.Add(ph.warmup)
	}
	end := from.Add(ph.duration)
	var left atomic.Int64
	left.Store(ph.attempts)
	rss := sampleRSS(ph.pid)
	// CPU is counted over the measured time only: sampled when the warmup ends.
	var cpuFrom [2]float64
	cpuTaken := make(chan struct{})
	go func() {
		defer close(cpuTaken)
		if d := time.Until(from); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
			}
		}
		cpuFrom = [2]float64{proccpu.Seconds(ph.pid), proccpu.Seconds(ph.mariadb)}
	}()
	recs := make([]*recorder, ph.clients)
	var wg sync.WaitGroup
	for i := range ph.clients {
		rec := &recorder{from: from}
		recs[i] = rec
		u := newUnit(i)
		wg.Go(func() {
			for ctx.Err() == nil {
				if ph.attempts > 0 {
					if left.Add(-1) < 0 {
						return
					}
				} else if !time.Now().Before(end) {
					return
				}
				u(ctx, rec)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(from)
	cpuTo := [2]float64{proccpu.Seconds(ph.pid), proccpu.Seconds(ph.mariadb)}
	<-cpuTaken
	peak := rss()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	res := &Result{Clients: ph.clients, Errors: map[string]int64{}, ElapsedSeconds: elapsed.Seconds(), RSSPeakMB: mb(peak)}
	var h histogram
	for _, r := range recs {
		h.merge(&r.hist)
		res.Calls += r.calls
		res.OK += r.ok
		res.Replays += r.replays
		for k, n := range r.errs {
			res.Errors[k] += n
		}
	}
	res.PerSecond = float64(res.OK) / elapsed.Seconds()
	res.CallsPerSecond = float64(res.Calls) / elapsed.Seconds()
	res.P50ms, res.P95ms, res.P99ms = h.quantile(0.50), h.quantile(0.95), h.quantile(0.99)
	res.MaxMs = float64(h.max) / 1e6
	if res.Calls > 0 {
		if cpuFrom[0] > 0 {
			res.ServiceCPUus = (cpuTo[0] - cpuFrom[0]) * 1e6 / float64(res.Calls)
		}
		if cpuFrom[1] > 0 {
			res.MariaDBCPUus = (cpuTo[1] - cpuFrom[1]) * 1e6 / float64(res.Calls)
		}
	}
	return res, nil
}

// recorder is one client's tally; only its client touches it.
type recorder struct {
	from    time.Time
	hist    histogram
	calls   int64
	ok      int64
	replays int64
	errs    map[string]int64
}

// observe records a call that started at start and returned err now. It
// reports whether the call is measured (it started after the warmup).
func (r *recorder) observe(start time.Time, err error) bool {
	return r.observeAt(start, time.Now(), err)
}

func (r *recorder) observeAt(start, end time.Time, err error) bool {
	if start.Before(r.from) {
		return false
	}
	r.calls++
	r.hist.add(int64(end.Sub(start)))
	if err != nil {
		r.fail(reasonOf(err))
	}
	return true
}

// fail counts an error by reason.
func (r *recorder) fail(reason string) {
	if r.errs == nil {
		r.errs = map[string]int64{}
	}
	r.errs[reason]++
}

// reasonOf names an error by its google.rpc.ErrorInfo reason, else by its
// gRPC code (DeadlineExceeded, Unavailable, ...).
func reasonOf(err error) string {
	var me *mysql.MySQLError
	switch {
	case errors.As(err, &me):
		return "MYSQL_" + strconv.Itoa(int(me.Number))
	case errors.Is(err, context.DeadlineExceeded):
		return "DeadlineExceeded"
	}
	st, ok := status.FromError(err)
	if !ok {
		return "CLIENT_ERROR"
	}
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.Reason != "" {
			return ei.Reason
		}
	}
	return st.Code().String()
}

// histogram counts nanosecond durations in buckets 1/64 of a power of two
// wide, so a quantile is off by less than 1.6%.
type histogram struct {
	counts [histBuckets]uint64
	n      uint64
	max    int64
}

const (
	subBits     = 6
	histBuckets = (40-subBits)*(1<<subBits) + 1<<subBits // up to 2^40 ns, ~18 minutes
)

// bucket: values under 128 have their own; above, the top 7 bits pick one.
func bucket(v int64) int {
	if v < 1<<(subBits+1) {
		return int(max(v, 0))
	}
	e := bits.Len64(uint64(v)) - (subBits + 1)
	return min(e<<subBits+int(v>>e), histBuckets-1)
}

// bucketMid is the middle of bucket i's range.
func bucketMid(i int) int64 {
	if i < 1<<(subBits+1) {
		return int64(i)
	}
	e := i>>subBits - 1
	m := int64(i - e<<subBits)
	return m<<e + (int64(1)<<e)/2
}

func (h *histogram) add(v int64) {
	h.counts[bucket(v)]++
	h.n++
	h.max = max(h.max, v)
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile returns the q-quantile in milliseconds.
func (h *histogram) quantile(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5)
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return float64(min(bucketMid(i), h.max)) / 1e6
		}
	}
	return float64(h.max) / 1e6
}

// sampleRSS samples the VmRSS of pid every 100ms until the returned
// function is called, which returns the highest sample in bytes.
func sampleRSS(pid int) func() int64 {
	if pid == 0 {
		return func() int64 { return 0 }
	}
	var peak atomic.Int64
	sample := func() {
		if rss, _, err := readRSS(pid); err == nil && rss > peak.Load() {
			peak.Store(rss)
		}
	}
	sample()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				sample()
			}
		}
	}()
	return func() int64 {
		close(stop)
		<-done
		sample()
		return peak.Load()
	}
}

// readRSS reads VmRSS and VmHWM (the lifetime peak) of pid, in bytes.
func readRSS(pid int) (rss, hwm int64, err error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("parse %s of pid %d: %w", k, pid, err)
		}
		if k == "VmRSS" {
			rss = kb << 10
		} else {
			hwm = kb << 10
		}
	}
	return rss, hwm, sc.Err()
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

// violations collects broken invariants from every client and check.
type violations struct {
	mu   sync.Mutex
	msgs []string
	n    int
}

const maxViolationMsgs = 50

func (v *violations) add(format string, args ...any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.n++
	if len(v.msgs) < maxViolationMsgs {
		v.msgs = append(v.msgs, fmt.Sprintf(format, args...))
	}
}

func (v *violations) count() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.n
}

func (v *violations) list() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := append([]string{}, v.msgs...)
	if v.n > len(v.msgs) {
		out = append(out, fmt.Sprintf("... and %d more", v.n-len(v.msgs)))
	}
	return out
}
