package redis

import (
	"context"
	"errors"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/opencoupon/coupon/participant"
)

// Blobs is the shared cache of opaque values (participant.Blobs), the
// second level of the template cache. Each value has a stamp key beside it
// (same hash slot) that every invalidation sets to a fresh token; a value
// is stored only under the stamp it was read under, so a reload that read
// MySQL before a change can never overwrite the change's invalidation.
type Blobs struct{ *conn }

var _ participant.Blobs = (*Blobs)(nil)

// stampTTL outlives any reload; a stamp that expired reads as "", which
// no reload that read a stamp before can match.
const stampTTL = 10 * time.Minute

func (b *Blobs) key(k string) string   { return b.prefix + "cache:{" + k + "}" }
func (b *Blobs) stamp(k string) string { return b.key(k) + ":stamp" }

// GetBlob reads a cached value.
func (b *Blobs) GetBlob(ctx context.Context, key string) ([]byte, bool, error) {
	v, err := b.rdb.Get(ctx, b.key(key)).Bytes()
	if errors.Is(err, goredis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, wrap("get "+key, err)
	}
	return v, true, nil
}

// Stamp reads the value's current stamp, "" when it has none.
func (b *Blobs) Stamp(ctx context.Context, key string) (string, error) {
	v, err := b.rdb.Get(ctx, b.stamp(key)).Result()
	if errors.Is(err, goredis.Nil) {
		return "", nil
	}
	return v, wrap("get stamp of "+key, err)
}

var putScript = goredis.NewScript(`
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
`)

// PutBlob caches a value for ttl if its stamp is still stamp.
func (b *Blobs) PutBlob(ctx context.Context, key string, v []byte, ttl time.Duration, stamp string) (bool, error) {
	n, err := putScript.Run(ctx, b.rdb, []string{b.key(key), b.stamp(key)}, v, stamp, ttl.Milliseconds()).Int()
	if err != nil {
		return false, wrap("set "+key, err)
	}
	return n == 1, nil
}

var invalidateScript = goredis.NewScript(`
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return redis.call('DEL', KEYS[1])
`)

// DelBlobs drops cached values and gives each a fresh stamp (one script per
// key: keys may live on different cluster slots).
func (b *Blobs) DelBlobs(ctx context.Context, keys ...string) error {
	var errs []error
	for _, k := range keys {
		err := invalidateScript.Run(ctx, b.rdb, []string{b.key(k), b.stamp(k)}, token(), stampTTL.Milliseconds()).Err()
		if err != nil {
			errs = append(errs, err)
		}
	}
	return wrap("invalidate cached values", errors.Join(errs...))
}
