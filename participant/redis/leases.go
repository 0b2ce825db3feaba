package redis

import (
	"context"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/opencoupon/coupon/internal/jobs"
	"github.com/opencoupon/coupon/participant"
)

// Leases are named, expiring locks shared by replicas (participant.Leases).
type Leases struct{ *conn }

var (
	_ participant.Leases = (*Leases)(nil)
	_ jobs.Locker        = (*Leases)(nil)
)

// lockScript takes the lease for the token, or renews it when the token
// already holds it (a re-sent call), so a retry never locks its own caller
// out.
var lockScript = goredis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if v then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`)

var unlockScript = goredis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// Lock takes a lease on name for ttl. When the answer is lost the lease may
// have been taken all the same; it is then released at once, so that it
// does not lock everyone out for ttl.
func (l *Leases) Lock(ctx context.Context, name string, ttl time.Duration) (func(), bool, error) {
	key := l.prefix + "lock:" + name
	tok := token()
	unlock := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = unlockScript.Run(ctx, l.rdb, []string{key}, tok).Err()
	}
	got, err := lockScript.Run(ctx, l.rdb, []string{key}, tok, ttl.Milliseconds()).Int()
	if err != nil {
		go unlock()
		return nil, false, wrap("lock "+name, err)
	}
	if got != 1 {
		return nil, false, nil
	}
	return unlock, true, nil
}
