package redis

import (
	"context"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/opencoupon/coupon/participant"
)

// Requests keeps the markers of idempotent requests (participant.Requests):
// "P|fp|token" while the call holding token is in flight, "D|fp" once done.
type Requests struct{ *conn }

var _ participant.Requests = (*Requests)(nil)

func (r *Requests) key(id string) string { return r.prefix + "req:" + id }

// beginScript takes the marker, or finds it already ours (a re-sent Begin),
// or reports who holds it.
var beginScript = goredis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ''
end
if v == ARGV[1] then return '' end
return v
`)

// Begin marks a request in flight, or reports who holds it.
func (r *Requests) Begin(ctx context.Context, requestID, fp string, ttl time.Duration) (string, bool, string, error) {
	tok := token()
	held, err := r.script(ctx, beginScript, []string{r.key(requestID)}, "P|"+fp+"|"+tok, ttl.Milliseconds()).Text()
	if err != nil {
		return "", false, "", wrap("begin request "+requestID, err)
	}
	if held == "" {
		return tok, true, "", nil
	}
	parts := strings.Split(held, "|")
	if len(parts) < 2 {
		return "", false, held, nil
	}
	return "", false, parts[1], nil
}

var forgetScript = goredis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// Finish records the request as done (kept for ttl) or, when ok is false,
// forgets the marker the call holding tok took.
func (r *Requests) Finish(ctx context.Context, requestID, fp, tok string, ok bool, ttl time.Duration) error {
	key := r.key(requestID)
	var err error
	if ok {
		err = r.pipe.do(ctx, func(pl goredis.Pipeliner) goredis.Cmder { return pl.Set(ctx, key, "D|"+fp, ttl) }, nil).Err()
	} else {
		err = r.script(ctx, forgetScript, []string{key}, "P|"+fp+"|"+tok).Err()
	}
	return wrap("finish request "+requestID, err)
}
