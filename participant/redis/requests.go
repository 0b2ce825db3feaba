package redis

import (
	"context"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/opencoupon/coupon/participant"
)

// Requests keeps the markers of idempotent requests (participant.Requests).
// A marker is "fp|token|started-ms", with "|m" appended once its call ended
// with the request maybe issued. Markers live in 64 buckets, hash-tagged
// so that each bucket has one slot; beside each bucket's markers a "born"
// key says since when (ms) the bucket has held markers: if Redis lost its
// data the bucket is born again, and a request marked before the loss may
// have lost its marker.
type Requests struct {
	*conn
	clock func() time.Time // nil: time.Now
}

// UseClock stamps markers and bucket births with now, the service's clock
// (participant.Deps.Now), which is what the service compares them with.
func (r *Requests) UseClock(now func() time.Time) { r.clock = now }

func (r *Requests) nowMS() int64 {
	if r.clock != nil {
		return r.clock().UnixMilli()
	}
	return time.Now().UnixMilli()
}

var _ participant.Requests = (*Requests)(nil)

const requestBuckets = 64

func (r *Requests) keys(id string) []string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	tag := r.bucket(h.Sum32() % requestBuckets)
	return []string{tag + ":" + id, tag + ":born"}
}

func (r *Requests) bucket(b uint32) string { return fmt.Sprintf("%sreq:{%d}", r.prefix, b) }

// Touch makes every bucket born that is not. A bucket is otherwise born at
// its first marker, which for a service that just started is after the
// templates it serves were created, so that their sold-out refusals all
// read MySQL for an earlier coupon; touched when the service starts (and
// after any loss), the buckets are older than every template created since.
// Safe at any moment: a bucket is only ever born after its markers were
// lost, since its born key lives in its slot and is lost with them. SET NX
// applies once, however often it is sent.
func (r *Requests) Touch(ctx context.Context) error {
	now := strconv.FormatInt(r.nowMS(), 10)
	_, err := r.rdb.Pipelined(ctx, func(pl goredis.Pipeliner) error {
		for b := range uint32(requestBuckets) {
			pl.SetNX(ctx, r.bucket(b)+":born", now, 0)
		}
		return nil
	})
	return wrap("touch request buckets", err)
}

// beginScript marks the request unless it is marked, and reports the
// holder and the bucket's birth. A re-sent Begin of the same call finds its
// own marker and is started.
var beginScript = goredis.NewScript(`
local born = redis.call('GET', KEYS[2])
if not born then
  born = ARGV[3]
  redis.call('SET', KEYS[2], born)
end
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {'', born}
end
if v == ARGV[1] then return {'', born} end
return {v, born}
`)

// maybeIssuedFlag is the fourth field of the marker of a call that ended
// with the request maybe issued.
const maybeIssuedFlag = "m"

func parseMarker(v string) participant.Marker {
	parts := strings.Split(v, "|")
	m := participant.Marker{FP: parts[0]}
	if len(parts) >= 3 {
		m.Token = parts[1]
		if ms, err := strconv.ParseInt(parts[2], 10, 64); err == nil {
			m.Started = time.UnixMilli(ms)
		}
	}
	m.MaybeIssued = len(parts) >= 4 && parts[3] == maybeIssuedFlag
	return m
}

func marker(fp, tok string, started int64) string {
	return fp + "|" + tok + "|" + strconv.FormatInt(started, 10)
}

// markerOf is the stored form of m, for a compare-and-set.
func markerOf(m participant.Marker) string {
	v := marker(m.FP, m.Token, m.Started.UnixMilli())
	if m.MaybeIssued {
		v += "|" + maybeIssuedFlag
	}
	return v
}

func bornAt(v any) time.Time {
	s, _ := v.(string)
	ms, _ := strconv.ParseInt(s, 10, 64)
	return time.UnixMilli(ms)
}

// Begin marks a request, or reports who holds it.
func (r *Requests) Begin(ctx context.Context, requestID, fp string, ttl time.Duration) (string, bool, participant.Marker, time.Time, error) {
	tok, now := token(), r.nowMS()
	res, err := r.script(ctx, beginScript, r.keys(requestID), marker(fp, tok, now), ttl.Milliseconds(), now).Slice()
	if err != nil {
		return "", false, participant.Marker{}, time.Time{}, wrap("begin request "+requestID, err)
	}
	held, _ := res[0].(string)
	since := bornAt(res[1])
	if held == "" {
		return tok, true, participant.Marker{}, since, nil
	}
	return "", false, parseMarker(held), since, nil
}

var peekScript = goredis.NewScript(`
return {redis.call('GET', KEYS[1]) or '', redis.call('GET', KEYS[2]) or ''}
`)

// Peek reads a marker without marking. A bucket never born reads as born
// now: nothing can have been lost from it.
func (r *Requests) Peek(ctx context.Context, requestID string) (*participant.Marker, time.Time, error) {
	res, err := r.script(ctx, peekScript, r.keys(requestID)).Slice()
	if err != nil {
		return nil, time.Time{}, wrap("peek request "+requestID, err)
	}
	since := time.UnixMilli(r.nowMS())
	if b, _ := res[1].(string); b != "" {
		since = bornAt(b)
	}
	if v, _ := res[0].(string); v != "" {
		m := parseMarker(v)
		return &m, since, nil
	}
	return nil, since, nil
}

var takeOverScript = goredis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
`)

// TakeOver replaces the marker of a call that died or ended with the
// request maybe issued.
func (r *Requests) TakeOver(ctx context.Context, requestID string, held participant.Marker, fp string, ttl time.Duration) (string, bool, error) {
	tok := token()
	n, err := r.script(ctx, takeOverScript, r.keys(requestID)[:1], markerOf(held), marker(fp, tok, r.nowMS()), ttl.Milliseconds()).Int()
	if err != nil {
		return "", false, wrap("take over request "+requestID, err)
	}
	return tok, n == 1, nil
}

var forgetScript = goredis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, string.len(ARGV[1])) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// Forget drops the marker the call holding tok took.
func (r *Requests) Forget(ctx context.Context, requestID, fp, tok string) error {
	err := r.script(ctx, forgetScript, r.keys(requestID)[:1], fp+"|"+tok+"|").Err()
	return wrap("forget request "+requestID, err)
}

var maybeIssuedScript = goredis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v or string.sub(v, 1, string.len(ARGV[1])) ~= ARGV[1] then return 0 end
if string.sub(v, -string.len(ARGV[2])) == ARGV[2] then return 0 end
redis.call('SET', KEYS[1], v .. ARGV[2], 'KEEPTTL')
return 1
`)

// MaybeIssued marks the marker the call holding tok took as maybe issued,
// for the rest of its TTL. Repeating it changes nothing.
func (r *Requests) MaybeIssued(ctx context.Context, requestID, fp, tok string) error {
	err := r.script(ctx, maybeIssuedScript, r.keys(requestID)[:1], fp+"|"+tok+"|", "|"+maybeIssuedFlag).Err()
	return wrap("mark request "+requestID+" maybe issued", err)
}
