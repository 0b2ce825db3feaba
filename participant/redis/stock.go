package redis

import (
	"context"
	"errors"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/opencoupon/coupon/participant"
)

// Stock keeps the live stock counters (participant.Stock). A template's
// stock is split over sub-keys whose hash tags differ ({tpl.i}), so one hot
// template spreads over the cluster's slots. Each sub-key is a hash: n, the
// units left, and g, the generation written when the counters were
// (re)built; a unit is given back, and a top-up added, only to the
// generation it was counted against, so a rebuild never counts it twice.
type Stock struct{ *conn }

var _ participant.Stock = (*Stock)(nil)

// markerTTL keeps the once-only markers of Give and Add for longer than
// any retry of them can arrive.
const markerTTL = 10 * time.Minute

func (s *Stock) subKey(templateID int64, i int32) string {
	return fmt.Sprintf("%sstock:{%d.%d}", s.prefix, templateID, i)
}

// marker is a once-only key in the sub-key's slot.
func (s *Stock) marker(templateID int64, i int32, kind, id string) string {
	return s.subKey(templateID, i) + ":" + kind + ":" + id
}

func subKeys(k int32) int32 { return max(k, 1) }

// takeScript takes one unit from a sub-key and answers the units left and
// the counters' generation; -1 (no generation) when the sub-key is empty
// and -2 when it is missing.
var takeScript = goredis.NewScript(`
local n = redis.call('HGET', KEYS[1], 'n')
if not n then return {-2, ''} end
n = tonumber(n)
if n <= 0 then return {-1, ''} end
redis.call('HINCRBY', KEYS[1], 'n', -1)
return {n - 1, redis.call('HGET', KEYS[1], 'g')}
`)

// TakeScript is the script Take runs on one sub-key (KEYS[1], a hash of n
// and g). The claim benchmark's baseline runs it as the bare Redis half of
// a claim, so that it measures the service's own script.
func TakeScript() *goredis.Script { return takeScript }

// Take takes one unit from the sub-key picked by hint, moving on to the
// next ones while they are empty.
func (s *Stock) Take(ctx context.Context, templateID int64, k int32, hint uint64) (participant.Ticket, error) {
	k = subKeys(k)
	start := int32(hint % uint64(k))
	for j := range k {
		i := (start + j) % k
		res, err := s.script(ctx, takeScript, []string{s.subKey(templateID, i)}).Slice()
		if err != nil {
			return participant.Ticket{}, wrap(fmt.Sprintf("take stock of template %d", templateID), err)
		}
		left, _ := res[0].(int64)
		switch left {
		case -2:
			return participant.Ticket{}, participant.ErrStockMissing
		case -1:
			continue
		}
		gen, _ := res[1].(string)
		return participant.Ticket{TemplateID: templateID, Sub: i, Generation: gen, ID: token()}, nil
	}
	return participant.Ticket{}, participant.ErrSoldOut
}

// giveScript adds the unit back once per ticket, to its own generation.
var giveScript = goredis.NewScript(`
if redis.call('HGET', KEYS[1], 'g') ~= ARGV[1] then return -1 end
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then return -2 end
return redis.call('HINCRBY', KEYS[1], 'n', 1)
`)

// Give returns one unit to the sub-key and generation it was taken from,
// once: a repeated Give of the same ticket changes nothing.
func (s *Stock) Give(ctx context.Context, t participant.Ticket) error {
	keys := []string{s.subKey(t.TemplateID, t.Sub), s.marker(t.TemplateID, t.Sub, "give", t.ID)}
	err := s.script(ctx, giveScript, keys, t.Generation, markerTTL.Milliseconds()).Err()
	return wrap(fmt.Sprintf("give stock of template %d", t.TemplateID), err)
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
	what := fmt.Sprintf("read stock of template %d", templateID)
	if err != nil && !errors.Is(err, goredis.Nil) {
		return 0, false, wrap(what, err)
	}
	var sum int64
	for _, c := range cmds {
		n, err := c.Int64()
		if errors.Is(err, goredis.Nil) {
			return 0, false, nil
		}
		if err != nil {
			return 0, false, wrap(what, err)
		}
		sum += max(n, 0)
	}
	return sum, true, nil
}

// Generation reads the generation of the template's counters; ok is false
// when they are missing.
func (s *Stock) Generation(ctx context.Context, templateID int64) (string, bool, error) {
	g, err := s.rdb.HGet(ctx, s.subKey(templateID, 0), "g").Result()
	if errors.Is(err, goredis.Nil) {
		return "", false, nil
	}
	if err != nil {
		return "", false, wrap(fmt.Sprintf("read stock generation of template %d", templateID), err)
	}
	return g, true, nil
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
	return wrap(fmt.Sprintf("reset stock of template %d", templateID), err)
}

// Set writes fresh counters of a new generation holding remaining units.
func (s *Stock) Set(ctx context.Context, templateID int64, k int32, remaining int64) error {
	k = subKeys(k)
	gen := token()
	_, err := s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i := range k {
			p.HSet(ctx, s.subKey(templateID, i), "n", share(remaining, k, i), "g", gen)
		}
		return nil
	})
	return wrap(fmt.Sprintf("set stock of template %d", templateID), err)
}

// share is sub-key i's part of n units spread over k sub-keys.
func share(n int64, k, i int32) int64 {
	part := n / int64(k)
	if int64(i) < n%int64(k) {
		part++
	}
	return part
}

// addScript adds a top-up's share once per operation, and only to the
// counters of the generation it was counted against.
var addScript = goredis.NewScript(`
if redis.call('HGET', KEYS[1], 'g') ~= ARGV[1] then return -1 end
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) then return -2 end
return redis.call('HINCRBY', KEYS[1], 'n', ARGV[2])
`)

// Add spreads n units over the counters of generation gen, once per opID.
// ok is false when the counters are missing or of another generation (a
// rebuild counted the top-up from MySQL, or will).
func (s *Stock) Add(ctx context.Context, templateID int64, k int32, n int64, gen, opID string) (bool, error) {
	k = subKeys(k)
	ok := true
	for i := range k {
		part := share(n, k, i)
		if part == 0 {
			continue
		}
		keys := []string{s.subKey(templateID, i), s.marker(templateID, i, "add", opID)}
		res, err := addScript.Run(ctx, s.rdb, keys, gen, part, markerTTL.Milliseconds()).Int64()
		if err != nil {
			return false, wrap(fmt.Sprintf("add stock to template %d", templateID), err)
		}
		if res == -1 {
			ok = false
		}
	}
	return ok, nil
}
