package mysql

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/opencoupon/coupon/internal/testenv"
	"github.com/opencoupon/coupon/participant"
)

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// databases creates a main and n shard databases on the test MariaDB.
func databases(t *testing.T, n int) (mainDSN string, shards []string) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs MariaDB")
	}
	name := testenv.Unique(t)
	mainDSN = testenv.MustDatabase(t, name+"_main")
	for i := range n {
		shards = append(shards, testenv.MustDatabase(t, fmt.Sprintf("%s_s%d", name, i)))
	}
	return mainDSN, shards
}

// open opens a store on cfg and closes it when the test ends.
func open(t *testing.T, cfg Config) *Stores {
	t.Helper()
	cfg.MaxOpenConns = 4
	s, err := Open(ctxT(t), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func coupon(id, user, tpl int64, req string) *participant.Coupon {
	now := time.Now().UTC()
	return &participant.Coupon{ID: id, Code: participant.CouponCode(id), TemplateID: tpl, CampaignID: 1, UserID: user,
		RequestID: req, Status: participant.CouponAvailable, ClaimedAt: now, ExpireAt: now.Add(time.Hour)}
}

// TestBatchPlansEachClaimByItsOwnLimit: two claims of one user in one batch
// whose template's per-user limit changed between them (0 and 2, in either
// order) are each decided by their own limit, and the stored count equals
// the coupons written.
func TestBatchPlansEachClaimByItsOwnLimit(t *testing.T) {
	mainDSN, shards := databases(t, 1)
	s := open(t, Config{MainDSN: mainDSN, ShardDSNs: shards, TablesPerShard: 2})
	if err := s.Migrate(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for n, tc := range []struct {
		limits  [2]int32
		refused [2]bool
	}{
		// One claimed before; limit 0 counts it, then limit 2 sees 2 and refuses.
		{[2]int32{0, 2}, [2]bool{false, true}},
		// Limit 2 sees 1 and accepts; limit 0 accepts and must be counted too.
		{[2]int32{2, 0}, [2]bool{false, false}},
	} {
		t.Run(fmt.Sprint(tc.limits), func(t *testing.T) {
			user, tpl := int64(100+n), int64(7)
			if err := s.Coupons.insertOne(ctxT(t), participant.Claim{Coupon: coupon(int64(1000*n+1), user, tpl, fmt.Sprintf("b%d-0", n)), PerUserLimit: 2}); err != nil {
				t.Fatal(err)
			}
			table := s.shards.ofUser(user).table
			jobs := make([]*claimJob, 2)
			for i := range jobs {
				jobs[i] = &claimJob{ctx: ctxT(t), table: table, done: make(chan error, 1), claim: participant.Claim{
					Coupon: coupon(int64(1000*n+2+i), user, tpl, fmt.Sprintf("b%d-%d", n, i+1)), PerUserLimit: tc.limits[i]}}
			}
			s.Coupons.writeBatch(s.shards.ofUser(user).db, jobs)
			results := []error{<-jobs[0].done, <-jobs[1].done}
			for i, r := range results {
				if got := participant.ErrorReason(r) == participant.ReasonUserLimitReached; got != tc.refused[i] {
					t.Fatalf("claim %d (limit %d): refused = %v (%v), want %v", i, tc.limits[i], got, r, tc.refused[i])
				}
			}
			sh := s.shards.ofUser(user)
			var claimed, rows int
			if err := sh.db.QueryRowContext(ctxT(t), `SELECT claimed FROM claim_count_`+sh.suffix()+` WHERE user_id = ? AND template_id = ?`, user, tpl).Scan(&claimed); err != nil {
				t.Fatal(err)
			}
			if err := sh.db.QueryRowContext(ctxT(t), `SELECT COUNT(*) FROM coupon_`+sh.suffix()+` WHERE user_id = ? AND template_id = ?`, user, tpl).Scan(&rows); err != nil {
				t.Fatal(err)
			}
			if claimed != rows {
				t.Fatalf("claim_count = %d, coupons = %d; want them equal", claimed, rows)
			}
		})
	}
}

// TestBatchCountsManyKeys: one batch over several tables and counts, with
// limited and unlimited templates and more claims than a limit allows,
// accepts exactly up to each limit in arrival order and leaves every count
// equal to the coupons written.
func TestBatchCountsManyKeys(t *testing.T) {
	mainDSN, shards := databases(t, 1)
	s := open(t, Config{MainDSN: mainDSN, ShardDSNs: shards, TablesPerShard: 4})
	if err := s.Migrate(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	// Users 1..6 have one coupon of template 1 (limit 2) already.
	id := int64(10000)
	for u := int64(1); u <= 6; u++ {
		id++
		if err := s.Coupons.insertOne(ctxT(t), participant.Claim{Coupon: coupon(id, u, 1, fmt.Sprintf("pre-%d", u)), PerUserLimit: 2}); err != nil {
			t.Fatal(err)
		}
	}
	type claim struct {
		user, tpl int64
		limit     int32
		refused   bool
	}
	var want []claim
	for u := int64(1); u <= 8; u++ {
		// Three claims of template 1 each: users 1..6 have room for one,
		// users 7..8 for two.
		room := 1
		if u > 6 {
			room = 2
		}
		for n := range 3 {
			want = append(want, claim{u, 1, 2, n >= room})
		}
		want = append(want, claim{u, 2, 0, false}, claim{u, 2, 0, false}) // unlimited
	}
	jobs := make([]*claimJob, len(want))
	for i, w := range want {
		id++
		jobs[i] = &claimJob{ctx: ctxT(t), table: s.shards.ofUser(w.user).table, done: make(chan error, 1), claim: participant.Claim{
			Coupon: coupon(id, w.user, w.tpl, fmt.Sprintf("many-%d", i)), PerUserLimit: w.limit}}
	}
	s.Coupons.writeBatch(s.shards.ofUser(1).db, jobs)
	for i, w := range want {
		err := <-jobs[i].done
		if got := participant.ErrorReason(err) == participant.ReasonUserLimitReached; got != w.refused || (err != nil && !got) {
			t.Fatalf("claim %d %+v: %v, want refused=%v", i, w, err, w.refused)
		}
	}
	for u := int64(1); u <= 8; u++ {
		sh := s.shards.ofUser(u)
		for tpl := int64(1); tpl <= 2; tpl++ {
			var claimed, rows int
			if err := sh.db.QueryRowContext(ctxT(t), `SELECT claimed FROM claim_count_`+sh.suffix()+` WHERE user_id = ? AND template_id = ?`, u, tpl).Scan(&claimed); err != nil {
				t.Fatal(err)
			}
			if err := sh.db.QueryRowContext(ctxT(t), `SELECT COUNT(*) FROM coupon_`+sh.suffix()+` WHERE user_id = ? AND template_id = ?`, u, tpl).Scan(&rows); err != nil {
				t.Fatal(err)
			}
			if claimed != rows || tpl == 1 && rows != 2 || tpl == 2 && rows != 2 {
				t.Fatalf("user %d template %d: count %d, coupons %d; want 2 and 2", u, tpl, claimed, rows)
			}
		}
	}
}

// TestShardMapRefusesMovingRows: the first migrate stores the map; adding
// shard databases keeps every slot where it is; a configuration that would
// move a slot holding rows (a tables_per_shard change, an explicit slot
// assignment) is refused by migrate and by serve's check, naming the slot;
// moving a slot without rows is accepted.
func TestShardMapRefusesMovingRows(t *testing.T) {
	mainDSN, shards := databases(t, 4)
	base := Config{MainDSN: mainDSN, ShardDSNs: shards[:2], TablesPerShard: 4}
	s := open(t, base)
	if err := s.Migrate(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := s.ShardMap.Verify(ctxT(t)); err != nil {
		t.Fatalf("ShardMap.Verify after the first migrate: %v", err)
	}
	if s.ShardMap.Slots() != DefaultSlots {
		t.Fatalf("slots = %d, want %d", s.ShardMap.Slots(), DefaultSlots)
	}
	// Rows for some users, and where they live.
	where := map[int64]int{}
	for u := int64(1); u <= 40; u++ {
		if err := s.Coupons.insertOne(ctxT(t), participant.Claim{Coupon: coupon(5000+u, u, 1, fmt.Sprintf("m-%d", u))}); err != nil {
			t.Fatal(err)
		}
		where[u] = s.shards.ofUser(u).table
		if want := slotOf(u, DefaultSlots) % 8; where[u] != want {
			t.Fatalf("user %d routes to table %d, want %d (splitmix64 mod 8)", u, where[u], want)
		}
	}

	t.Run("more shard databases keep every slot", func(t *testing.T) {
		grown := base
		grown.ShardDSNs = shards
		g := open(t, grown)
		if err := g.ShardMap.Verify(ctxT(t)); err == nil || !strings.Contains(err.Error(), "coupon migrate") {
			t.Fatalf("ShardMap.Verify before migrate = %v, want a request to migrate", err)
		}
		if err := g.Migrate(ctxT(t)); err != nil {
			t.Fatalf("Migrate: %v", err)
		}
		if err := g.ShardMap.Verify(ctxT(t)); err != nil {
			t.Fatalf("ShardMap.Verify: %v", err)
		}
		for u, table := range where {
			if got := g.shards.ofUser(u).table; got != table {
				t.Fatalf("user %d moved from table %d to %d", u, table, got)
			}
			if _, err := g.Coupons.ByRequest(ctxT(t), u, fmt.Sprintf("m-%d", u)); err != nil {
				t.Fatalf("user %d's coupon not found after growing: %v", u, err)
			}
		}
	})
	t.Run("tables_per_shard change moves tables holding rows", func(t *testing.T) {
		moved := base
		moved.ShardDSNs, moved.TablesPerShard = shards, 2 // table 2 would move from shard 0 to shard 1
		m := open(t, moved)
		for name, check := range map[string]func(context.Context) error{"Migrate": m.Migrate, "ShardMap.Verify": m.ShardMap.Verify} {
			err := check(ctxT(t))
			if err == nil || !strings.Contains(err.Error(), "would move slots that hold rows") || !strings.Contains(err.Error(), "slot ") {
				t.Fatalf("%s = %v, want a refusal naming the slots", name, err)
			}
		}
	})
	t.Run("explicit slot assignment", func(t *testing.T) {
		grown := base
		grown.ShardDSNs = shards // 16 tables; 8..15 own no slot
		g := open(t, grown)
		assignment := func(move func(slot int) bool) []SlotRange {
			var out []SlotRange
			for slot := range g.ShardMap.Slots() {
				table := g.ShardMap.SlotTable(slot)
				if move(slot) {
					table = 8 + table // a new, empty table
				}
				out = append(out, SlotRange{Lo: slot, Hi: slot, Table: table})
			}
			return out
		}
		busy := g.ShardMap.SlotOf(1)
		full := grown
		full.SlotMap = assignment(func(slot int) bool { return slot == busy })
		m := open(t, full)
		if err := m.Migrate(ctxT(t)); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("slot %d:", busy)) {
			t.Fatalf("Migrate moving slot %d = %v, want a refusal naming it", busy, err)
		}
		empty := -1
		for slot := range g.ShardMap.Slots() {
			used := false
			for u := range where {
				used = used || g.ShardMap.SlotOf(u) == slot
			}
			if !used {
				empty = slot
				break
			}
		}
		free := grown
		free.SlotMap = assignment(func(slot int) bool { return slot == empty })
		f := open(t, free)
		if err := f.Migrate(ctxT(t)); err != nil {
			t.Fatalf("Migrate moving empty slot %d: %v", empty, err)
		}
		if got := open(t, grown).ShardMap.SlotTable(empty); got < 8 {
			t.Fatalf("slot %d belongs to table %d after the move, want a new table", empty, got)
		}
	})
	t.Run("slot count is fixed", func(t *testing.T) {
		other := base
		other.Slots = 512
		if _, err := Open(ctxT(t), other); err == nil || !strings.Contains(err.Error(), "fixed at the first migrate") {
			t.Fatalf("Open with 512 slots = %v, want a refusal", err)
		}
	})
}

// TestInsertsRacingClose: claims that reach the store while it closes (a
// handler answered at its deadline still runs) are written or refused as
// not written, never panic, and the refused ones left no row.
func TestInsertsRacingClose(t *testing.T) {
	mainDSN, shards := databases(t, 2)
	cfg := Config{MainDSN: mainDSN, ShardDSNs: shards, TablesPerShard: 2, MaxOpenConns: 4}
	s, err := Open(ctxT(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 40
	written := make(chan int)
	started := make(chan struct{}, workers)
	for w := range workers {
		go func() {
			n := 0
			defer func() { written <- n }()
			for i := range each {
				id := int64(w*each + i + 1)
				err := s.Coupons.Insert(ctxT(t), participant.Claim{Coupon: coupon(id, id, 1, fmt.Sprintf("race-%d", id))})
				if i == 2 {
					started <- struct{}{}
				}
				if err != nil {
					if participant.ErrorCode(err) != participant.EUNAVAILABLE {
						t.Errorf("insert %d racing Close: %v, want Unavailable", id, err)
					}
					return
				}
				n++
			}
		}()
	}
	for range workers {
		<-started
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	total := 0
	for range workers {
		total += <-written
	}
	if err := s.Coupons.Insert(ctxT(t), participant.Claim{Coupon: coupon(99999, 1, 1, "after-close")}); participant.ErrorCode(err) != participant.EUNAVAILABLE {
		t.Fatalf("insert after Close: %v, want Unavailable", err)
	}
	probe := open(t, cfg)
	rows := 0
	for u := int64(1); u <= workers*each; u++ {
		sh := probe.shards.ofUser(u)
		var n int
		if err := sh.db.QueryRowContext(ctxT(t), `SELECT COUNT(*) FROM coupon_`+sh.suffix()+` WHERE user_id = ?`, u).Scan(&n); err != nil {
			t.Fatal(err)
		}
		rows += n
	}
	if rows != total {
		t.Fatalf("%d coupons stored, %d inserts answered OK", rows, total)
	}
}

// TestRefusedBranchLeavesNothingOpen: a branch change the server refuses
// (a daily cap's CHECK) in the round trip that also commits leaves no
// barrier row, count or coupon change behind — also not later, when the
// same pooled connection opens the next branch's transaction (START
// TRANSACTION would commit whatever was left open).
func TestRefusedBranchLeavesNothingOpen(t *testing.T) {
	mainDSN, shards := databases(t, 1)
	s := open(t, Config{MainDSN: mainDSN, ShardDSNs: shards, TablesPerShard: 1})
	if err := s.Migrate(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	const user, tpl = 5, 3
	sh := s.shards.ofUser(user)
	sh.db.SetMaxOpenConns(1) // every branch below runs on one connection
	codes := map[int64]string{}
	for id := int64(1); id <= 2; id++ {
		c := coupon(id, user, tpl, fmt.Sprintf("r%d", id))
		codes[id] = c.Code
		if err := s.Coupons.insertOne(ctxT(t), participant.Claim{Coupon: c}); err != nil {
			t.Fatal(err)
		}
	}
	lock := func(gid string, id int64, limit int32) error {
		br := participant.Branch{TransType: "tcc", GID: gid, BranchID: "01", Op: "try"}
		_, err := s.Branches.Apply(ctxT(t), br, user, codes[id], func(c *participant.Coupon) (*participant.Change, error) {
			now := time.Now().UTC()
			return &participant.Change{Status: participant.CouponLocked, OrderNo: gid, GID: gid, BranchID: "01", LockedAt: now, At: now,
				Ledger:   []participant.Entry{{Op: participant.OpLock, OrderNo: gid}},
				CountUse: []participant.DailyLimit{{TemplateID: tpl, Limit: limit}}}, nil
		})
		return err
	}
	if err := lock("g1", 1, 1); err != nil {
		t.Fatal(err)
	}
	if err := lock("g2", 2, 1); participant.ErrorReason(err) != participant.ReasonDailyUseLimitReached {
		t.Fatalf("second lock past the daily cap: %v, want DAILY_USE_LIMIT_REACHED", err)
	}
	check := func(when string) {
		t.Helper()
		var barriers, ledger, used int
		var status participant.CouponStatus
		db := sh.db
		if err := db.QueryRowContext(ctxT(t), `SELECT COUNT(*) FROM barrier WHERE gid = 'g2'`).Scan(&barriers); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRowContext(ctxT(t), `SELECT COUNT(*) FROM coupon_ledger WHERE gid = 'g2'`).Scan(&ledger); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRowContext(ctxT(t), `SELECT used FROM daily_use WHERE user_id = ? AND template_id = ?`, user, tpl).Scan(&used); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRowContext(ctxT(t), `SELECT status FROM coupon_`+sh.suffix()+` WHERE id = 2`).Scan(&status); err != nil {
			t.Fatal(err)
		}
		if barriers != 0 || ledger != 0 || status != participant.CouponAvailable {
			t.Fatalf("%s: g2 left %d barrier rows, %d ledger rows, coupon 2 %s; want none and AVAILABLE", when, barriers, ledger, status)
		}
		if used != 1 {
			t.Fatalf("%s: daily use %d, want 1 (g1's)", when, used)
		}
	}
	check("after the refusal")
	// The next branch on the same connection: uncapped, it succeeds, and
	// its START TRANSACTION finds nothing of g2 to commit.
	if err := lock("g3", 2, 0); err != nil {
		t.Fatal(err)
	}
	var barriers int
	if err := sh.db.QueryRowContext(ctxT(t), `SELECT COUNT(*) FROM barrier WHERE gid = 'g2'`).Scan(&barriers); err != nil || barriers != 0 {
		t.Fatalf("g2's barrier rows after the next branch: %d (%v), want 0", barriers, err)
	}
}

// TestStoresReportOnEveryPool: readiness and pool metrics cover the main
// database and every shard database, by name, without handing out a pool.
func TestStoresReportOnEveryPool(t *testing.T) {
	mainDSN, shards := databases(t, 2)
	s := open(t, Config{MainDSN: mainDSN, ShardDSNs: shards, TablesPerShard: 1})
	if err := s.Ping(ctxT(t)); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	stats := s.PoolStats()
	for _, name := range []string{"main", "shard_0", "shard_1"} {
		if st, ok := stats[name]; !ok || st.OpenConnections == 0 {
			t.Errorf("PoolStats()[%q] = %+v, %v; want the pool's open connections", name, st, ok)
		}
	}
	if len(stats) != 3 {
		t.Errorf("PoolStats() has %d pools, want 3", len(stats))
	}
	if got := len(s.PoolCollectors()); got != 3 {
		t.Errorf("PoolCollectors() = %d collectors, want 3", got)
	}
}
