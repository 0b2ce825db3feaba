// Package redis keeps the coupon service's shared, fast state in Redis (a
// single server or a Redis Cluster): the live stock counters, the request
// markers of idempotent claims, the leases of background jobs and the
// cached template blobs. Each is its own type behind its own port; they
// share one client and one pipeline.
//
// Every script touches keys of one hash slot, so it runs on any cluster
// node. Every script that changes state is idempotent (a retried call,
// whether go-redis re-sent it after a timeout or a caller retried it, does
// not apply twice): Give and Add are keyed by the ticket or operation,
// leases and request markers by a token of the call that took them. Only a
// Take whose reply is lost may have taken a unit for nothing; that leaves
// the counters short (never oversold) until the stock audit repairs it.
package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"

	goredis "github.com/redis/go-redis/v9"

	"github.com/opencoupon/coupon/participant"
)

// Adapter holds the four Redis-backed ports of the service.
type Adapter struct {
	Stock    *Stock
	Requests *Requests
	Leases   *Leases
	Blobs    *Blobs
	pipe     *pipe
}

// New returns the adapters over rdb; every key they write starts with
// prefix (e.g. "coupon:"). The service's client carries a Breaker.
func New(rdb goredis.UniversalClient, prefix string) *Adapter {
	c := &conn{rdb: rdb, prefix: prefix, pipe: newPipe(rdb)}
	return &Adapter{Stock: &Stock{c}, Requests: &Requests{conn: c}, Leases: &Leases{c}, Blobs: &Blobs{c}, pipe: c.pipe}
}

// Close answers the calls queued so far and stops the pipeline workers; a
// call that follows (a background give-back outliving shutdown) fails with
// an Unavailable error without being sent. Close before closing the client.
func (a *Adapter) Close() { a.pipe.shut() }

// conn is what the adapters share.
type conn struct {
	rdb    goredis.UniversalClient
	prefix string
	pipe   *pipe
}

// wrap maps a Redis failure to the domain's transient error, once, here:
// from the domain's side every Redis failure is worth a retry.
func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	var pe *participant.Error
	if errors.As(err, &pe) {
		return err
	}
	return participant.Unavailable(what, err)
}

func token() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// script runs a script through the shared pipeline; on NOSCRIPT it runs it
// directly (EVALSHA, then EVAL), which loads it for next time.
func (c *conn) script(ctx context.Context, s *goredis.Script, keys []string, args ...any) *goredis.Cmd {
	cmd := c.pipe.do(ctx,
		func(pl goredis.Pipeliner) goredis.Cmder { return s.EvalSha(ctx, pl, keys, args...) },
		func() goredis.Cmder { return s.Run(ctx, c.rdb, keys, args...) })
	return cmd.(*goredis.Cmd)
}
