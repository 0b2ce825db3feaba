// Package rediskeys removes a benchmark's Redis keys when it ends: the
// Redis is shared, so only the keys under the benchmark's own prefix, and
// a benchmark can leave millions of request markers behind.
package rediskeys

import (
	"context"

	goredis "github.com/redis/go-redis/v9"
)

// Delete removes the keys under prefix, never anything else, unlinking
// them 500 at a time as a scan finds them.
func Delete(ctx context.Context, rdb *goredis.Client, prefix string) error {
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := rdb.Unlink(ctx, batch...).Err()
		batch = batch[:0]
		return err
	}
	for iter.Next(ctx) {
		if batch = append(batch, iter.Val()); len(batch) == 500 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := iter.Err(); err != nil {
		return err
	}
	return flush()
}
