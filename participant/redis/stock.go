// Package redis keeps the live stock counters and request markers of the
// coupon service in Redis (a single server or a Redis Cluster).
//
// Every script touches one key, so it runs on any cluster node. A
// template's stock is split over sub-keys whose hash tags differ
// ({tpl.i}), so one hot template spreads over the cluster's slots. Each
// sub-key is a hash: n, the units left, and g, the generation written when
// the counters were (re)built; a unit is given back only to the generation
// it was taken from, so a rebuild never counts it twice.
package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/opencoupon/coupon/participant"
)

// Stock implements participant.Stock.
type Stock struct {
	rdb    goredis.UniversalClient
	prefix string
	pipe   *pipe
}

var _ participant.Stock = (*Stock)(nil)

// New returns a Stock whose keys all start with prefix (e.g. "coupon:").
func New(rdb goredis.UniversalClient, prefix string) *Stock {
	return &Stock{rdb: rdb, prefix: prefix, pipe: newPipe(rdb)}
}

// Close stops the pipeline workers; no call may be in flight or follow.
func (s *Stock) Close() { close(s.pipe.ch) }

func (s *Stock) subKey(templateID int64, i int32) string {
	return fmt.Sprintf("%sstock:{%d.%d}", s.prefix, templateID, i)
}

func subKeys(k int32) int32 { return max(k, 1) }

var takeScript = goredis.NewScript(`
local n = redis.call('HGET', KEYS[1], 'n')
if not n then return {-2, ''} end
n = tonumber(n)
if n <= 0 then return {-1, ''} end
redis.call('HINCRBY', KEYS[1], 'n', -1)
return {n - 1, redis.call('HGET', KEYS[1], 'g')}
`)

// Take takes one unit from the sub-key picked by hint, moving on to the
// next ones while they are empty.
func (s *Stock) Take(ctx context.Context, templateID int64, k int32, hint uint64) (participant.Ticket, error) {
	k = subKeys(k)
	start := int32(hint % uint64(k))
	for j := range k {
		i := (start + j) % k
		res, err := s.evalSha(ctx, takeScript, []string{s.subKey(templateID, i)}).Slice()
		if err != nil {
			return participant.Ticket{}, fmt.Errorf("take stock of template %d: %w", templateID, err)
		}
		left, _ := res[0].(int64)
		switch left {
		case -2:
			return participant.Ticket{}, participant.ErrStockMissing
		case -1:
			continue
		}
		gen, _ := res[1].(string)
		return participant.Ticket{TemplateID: templateID, Sub: i, Generation: gen}, nil
	}
	return participant.Ticket{}, participant.ErrSoldOut
}

var giveScript = goredis.NewScript(`
if redis.call('HGET', KEYS[1], 'g') == ARGV[1] then
  return redis.call('HINCRBY', KEYS[1], 'n', ARGV[2])
end
return -1
`)

// Give returns one unit to the sub-key and generation it was taken from.
func (s *Stock) Give(ctx context.Context, t participant.Ticket) error {
	if err := s.evalSha(ctx, giveScript, []string{s.subKey(t.TemplateID, t.Sub)}, t.Generation, 1).Err(); err != nil {
		return fmt.Errorf("give stock of template %d: %w", t.TemplateID, err)
	}
	return nil
}

// Remaining sums the sub-keys.
func (s *Stock) Remaining(ctx context.Context, templateID int64, k int32) (int64, bool, error) {
	k = subKeys(k)
	cmds := make([]*goredis.StringCmd, k)
	_, err := s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i := range k {
			cmds[i] = p.HGet(ctx, s.subKey(templateID, i), "n")
		}
		return nil
	})
	if err != nil && !errors.Is(err, goredis.Nil) {
		return 0, false, fmt.Errorf("read stock of template %d: %w", templateID, err)
	}
	var sum int64
	for _, c := range cmds {
		n, err := c.Int64()
		if errors.Is(err, goredis.Nil) {
			return 0, false, nil
		}
		if err != nil {
			return 0, false, fmt.Errorf("read stock of template %d: %w", templateID, err)
		}
		sum += max(n, 0)
	}
	return sum, true, nil
}

// Reset deletes the template's sub-keys.
func (s *Stock) Reset(ctx context.Context, templateID int64, k int32) error {
	k = subKeys(k)
	_, err := s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i := range k {
			p.Del(ctx, s.subKey(templateID, i))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reset stock of template %d: %w", templateID, err)
	}
	return nil
}

// Set writes fresh counters of a new generation holding remaining units.
func (s *Stock) Set(ctx context.Context, templateID int64, k int32, remaining int64) error {
	k = subKeys(k)
	gen := token()
	_, err := s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i := range k {
			n := remaining / int64(k)
			if int64(i) < remaining%int64(k) {
				n++
			}
			p.HSet(ctx, s.subKey(templateID, i), "n", n, "g", gen)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set stock of template %d: %w", templateID, err)
	}
	return nil
}

var addScript = goredis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HINCRBY', KEYS[1], 'n', ARGV[1])
end
return -1
`)

// Add spreads n units over existing sub-keys.
func (s *Stock) Add(ctx context.Context, templateID int64, k int32, n int64) (bool, error) {
	k = subKeys(k)
	ok := true
	for i := range k {
		part := n / int64(k)
		if int64(i) < n%int64(k) {
			part++
		}
		if part == 0 {
			continue
		}
		res, err := addScript.Run(ctx, s.rdb, []string{s.subKey(templateID, i)}, part).Int64()
		if err != nil {
			return false, fmt.Errorf("add stock to template %d: %w", templateID, err)
		}
		if res == -1 {
			ok = false
		}
	}
	return ok, nil
}

var unlockScript = goredis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// Lock takes a lease on name for ttl.
func (s *Stock) Lock(ctx context.Context, name string, ttl time.Duration) (func(), bool, error) {
	key := s.prefix + "lock:" + name
	tok := token()
	ok, err := s.rdb.SetNX(ctx, key, tok, ttl).Result()
	if err != nil {
		return nil, false, fmt.Errorf("lock %s: %w", name, err)
	}
	if !ok {
		return nil, false, nil
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = unlockScript.Run(ctx, s.rdb, []string{key}, tok).Err()
	}, true, nil
}

var beginScript = goredis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return '' end
return redis.call('GET', KEYS[1]) or ''
`)

func (s *Stock) requestKey(id string) string { return s.prefix + "req:" + id }

// BeginRequest marks a request in flight, or reports who holds it.
func (s *Stock) BeginRequest(ctx context.Context, requestID, fp string, ttl time.Duration) (bool, string, error) {
	held, err := s.evalSha(ctx, beginScript, []string{s.requestKey(requestID)}, "P|"+fp, ttl.Milliseconds()).Text()
	if err != nil {
		return false, "", fmt.Errorf("begin request %s: %w", requestID, err)
	}
	if held == "" {
		return true, "", nil
	}
	_, heldFP, ok := strings.Cut(held, "|") // "P|fp" in flight, "D|fp" done
	if !ok {
		return false, held, nil
	}
	return false, heldFP, nil
}

var forgetScript = goredis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// FinishRequest records the request's end.
func (s *Stock) FinishRequest(ctx context.Context, requestID, fp string, ok bool, ttl time.Duration) error {
	key := s.requestKey(requestID)
	var err error
	if ok {
		err = s.pipe.do(ctx, func(pl goredis.Pipeliner) goredis.Cmder { return pl.Set(ctx, key, "D|"+fp, ttl) }, nil).Err()
	} else {
		err = s.evalSha(ctx, forgetScript, []string{key}, "P|"+fp).Err()
	}
	if err != nil {
		return fmt.Errorf("finish request %s: %w", requestID, err)
	}
	return nil
}

func token() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *Stock) blobKey(key string) string { return s.prefix + "cache:" + key }

// GetBlob reads a cached value.
func (s *Stock) GetBlob(ctx context.Context, key string) ([]byte, bool, error) {
	b, err := s.rdb.Get(ctx, s.blobKey(key)).Bytes()
	if errors.Is(err, goredis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("get %s: %w", key, err)
	}
	return b, true, nil
}

// PutBlob caches a value for ttl.
func (s *Stock) PutBlob(ctx context.Context, key string, v []byte, ttl time.Duration) error {
	if err := s.rdb.Set(ctx, s.blobKey(key), v, ttl).Err(); err != nil {
		return fmt.Errorf("set %s: %w", key, err)
	}
	return nil
}

// DelBlobs drops cached values (one command per key: keys may live on
// different cluster slots).
func (s *Stock) DelBlobs(ctx context.Context, keys ...string) error {
	_, err := s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for _, k := range keys {
			p.Del(ctx, s.blobKey(k))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete cached values: %w", err)
	}
	return nil
}
