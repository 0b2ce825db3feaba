package chaos

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Coupon statuses as stored (participant.CouponStatus).
const (
	couponAvailable = 1
	couponLocked    = 2
	couponUsed      = 3
	couponExpired   = 4
)

var couponStatusName = map[int]string{couponAvailable: "AVAILABLE", couponLocked: "LOCKED", couponUsed: "USED", couponExpired: "EXPIRED"}

type couponRow struct {
	ID, TemplateID, UserID int64
	Code, RequestID        string
	Status                 int
	OrderNo                string
	Discount               int64
	LockedDay              string // UTC day of locked_at, "" when not locked
	Table                  string
}

type ledgerRow struct {
	Op, OrderNo, GID, Code string
	CouponID, Discount     int64
	Day                    string // UTC day of the row
}

type templateRow struct {
	ID, Total, PerUser, DailyLimit int64
	SubKeys                        int32
	Returnable                     bool
}

type shopOrder struct {
	OrderNo, Coupon, GID, Status string
	UserID, Amount, Discount     int64
	Payable                      int64
}

type payment struct {
	OrderNo, GID, Status string
	UserID, Amount       int64
}

type account struct{ Balance, Frozen int64 }

// snapshot is the run's state read straight from the databases and Redis,
// scoped to its templates, users and order numbers.
type snapshot struct {
	templates  map[int64]templateRow
	coupons    []couponRow
	byCode     map[string]*couponRow
	byRequest  map[string][]*couponRow
	ledger     []ledgerRow
	claimCount map[[2]int64]int64 // (user, template) → claimed
	dailyUse   map[string]int64   // "user/day/template" → used
	orders     map[string]*shopOrder
	payments   map[string]*payment
	accounts   map[int64]account
	redis      map[int64][]int64 // template → n of each sub-key (missing: nil)
}

func inList(ids []int64) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = strconv.FormatInt(id, 10)
	}
	return strings.Join(parts, ",")
}

// couponTables lists the coupon_NNNN tables of a shard database.
func (s *Stack) couponTables(ctx context.Context, shard string) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = ? AND table_name REGEXP '^coupon_[0-9]+$'`, shard)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

func (s *Stack) snapshot(ctx context.Context, r *run) (*snapshot, error) {
	sn := &snapshot{
		templates: map[int64]templateRow{}, byCode: map[string]*couponRow{}, byRequest: map[string][]*couponRow{},
		claimCount: map[[2]int64]int64{}, dailyUse: map[string]int64{}, orders: map[string]*shopOrder{},
		payments: map[string]*payment{}, accounts: map[int64]account{}, redis: map[int64][]int64{},
	}
	all, _ := r.allUsers()
	tpls, users := inList(r.tpls), inList(all)
	q := func(query string, scan func(*sql.Rows) error, args ...any) error {
		rows, err := s.db.QueryContext(ctx, query, args...)
		if err != nil {
			return fmt.Errorf("%s: %w", strings.Fields(query)[0:4], err)
		}
		defer rows.Close()
		for rows.Next() {
			if err := scan(rows); err != nil {
				return err
			}
		}
		return rows.Err()
	}
	err := q(`SELECT id, total_stock, per_user_limit, daily_use_limit, sub_stock_count, returnable FROM `+dbMain+`.coupon_template WHERE id IN (`+tpls+`)`, func(rs *sql.Rows) error {
		var t templateRow
		err := rs.Scan(&t.ID, &t.Total, &t.PerUser, &t.DailyLimit, &t.SubKeys, &t.Returnable)
		sn.templates[t.ID] = t
		return err
	})
	if err != nil {
		return nil, err
	}
	for i := range shards {
		db := shardName(i)
		ts, err := s.couponTables(ctx, db)
		if err != nil {
			return nil, err
		}
		for _, t := range ts {
			err := q(`SELECT id, template_id, user_id, code, request_id, status, order_no, discount_amount,
				IFNULL(DATE_FORMAT(locked_at, '%Y-%m-%d'), '') FROM `+db+`.`+t+` WHERE template_id IN (`+tpls+`)`, func(rs *sql.Rows) error {
				c := couponRow{Table: db + "." + t}
				err := rs.Scan(&c.ID, &c.TemplateID, &c.UserID, &c.Code, &c.RequestID, &c.Status, &c.OrderNo, &c.Discount, &c.LockedDay)
				sn.coupons = append(sn.coupons, c)
				return err
			})
			if err != nil {
				return nil, err
			}
			n := strings.TrimPrefix(t, "coupon_")
			err = q(`SELECT user_id, template_id, claimed FROM `+db+`.claim_count_`+n+` WHERE user_id IN (`+users+`)`, func(rs *sql.Rows) error {
				var u, tp, c int64
				err := rs.Scan(&u, &tp, &c)
				sn.claimCount[[2]int64{u, tp}] += c
				return err
			})
			if err != nil {
				return nil, err
			}
		}
		err = q(`SELECT op, order_no, gid, coupon_code, coupon_id, discount_amount, DATE_FORMAT(created_at, '%Y-%m-%d') FROM `+db+`.coupon_ledger WHERE template_id IN (`+tpls+`) ORDER BY id`, func(rs *sql.Rows) error {
			var l ledgerRow
			err := rs.Scan(&l.Op, &l.OrderNo, &l.GID, &l.Code, &l.CouponID, &l.Discount, &l.Day)
			sn.ledger = append(sn.ledger, l)
			return err
		})
		if err != nil {
			return nil, err
		}
		err = q(`SELECT user_id, DATE_FORMAT(day, '%Y-%m-%d'), template_id, used FROM `+db+`.daily_use WHERE user_id IN (`+users+`)`, func(rs *sql.Rows) error {
			var u, tp, n int64
			var day string
			err := rs.Scan(&u, &day, &tp, &n)
			sn.dailyUse[fmt.Sprintf("%d/%s/%d", u, day, tp)] += n
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	for i := range sn.coupons {
		c := &sn.coupons[i]
		sn.byCode[c.Code] = c
		sn.byRequest[c.RequestID] = append(sn.byRequest[c.RequestID], c)
	}
	like := r.prefix + "%"
	err = q(`SELECT order_no, user_id, amount, coupon_code, discount, payable, gid, status FROM `+dbOrder+`.orders WHERE order_no LIKE ?`, func(rs *sql.Rows) error {
		var o shopOrder
		err := rs.Scan(&o.OrderNo, &o.UserID, &o.Amount, &o.Coupon, &o.Discount, &o.Payable, &o.GID, &o.Status)
		sn.orders[o.OrderNo] = &o
		return err
	}, like)
	if err != nil {
		return nil, err
	}
	err = q(`SELECT order_no, gid, user_id, amount, status FROM `+dbPayment+`.payments WHERE order_no LIKE ?`, func(rs *sql.Rows) error {
		var p payment
		err := rs.Scan(&p.OrderNo, &p.GID, &p.UserID, &p.Amount, &p.Status)
		sn.payments[p.OrderNo] = &p
		return err
	}, like)
	if err != nil {
		return nil, err
	}
	err = q(`SELECT user_id, balance, frozen FROM `+dbPayment+`.accounts WHERE user_id IN (`+users+`)`, func(rs *sql.Rows) error {
		var u int64
		var a account
		err := rs.Scan(&u, &a.Balance, &a.Frozen)
		sn.accounts[u] = a
		return err
	})
	if err != nil {
		return nil, err
	}
	for id, t := range sn.templates {
		ns, err := s.subKeys(ctx, id, t.SubKeys)
		if err != nil {
			return nil, err
		}
		sn.redis[id] = ns
	}
	return sn, nil
}

// subKeys reads field n of each stock sub-key of a template
// (PREFIXstock:{TPL.I}); nil when any is missing (Redis lost them).
func (s *Stack) subKeys(ctx context.Context, tpl int64, k int32) ([]int64, error) {
	k = max(k, 1)
	out := make([]int64, k)
	for i := range k {
		v, err := s.rdb.HGet(ctx, fmt.Sprintf("%sstock:{%d.%d}", keyPrefix, tpl, i), "n").Result()
		if err != nil {
			if err.Error() == "redis: nil" {
				return nil, nil
			}
			return nil, fmt.Errorf("read stock of template %d: %w", tpl, err)
		}
		if out[i], err = strconv.ParseInt(v, 10, 64); err != nil {
			return nil, fmt.Errorf("stock of template %d sub-key %d: %w", tpl, i, err)
		}
	}
	return out, nil
}

// issued counts a template's coupon records across every shard table.
func (s *Stack) issued(ctx context.Context, tpl int64) (int64, error) {
	var total int64
	for i := range shards {
		db := shardName(i)
		ts, err := s.couponTables(ctx, db)
		if err != nil {
			return 0, err
		}
		for _, t := range ts {
			var n int64
			if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+db+`.`+t+` WHERE template_id = ?`, tpl).Scan(&n); err != nil {
				return 0, err
			}
			total += n
		}
	}
	return total, nil
}

// stockReading is one template's stock as the audit sees it.
type stockReading struct {
	Total, Issued, Remaining int64
	Missing                  bool // the Redis counters are gone
}

func (s *Stack) readStock(ctx context.Context, tpl int64) (stockReading, error) {
	var r stockReading
	var k int32
	if err := s.db.QueryRowContext(ctx, `SELECT total_stock, sub_stock_count FROM `+dbMain+`.coupon_template WHERE id = ?`, tpl).Scan(&r.Total, &k); err != nil {
		return r, err
	}
	var err error
	if r.Issued, err = s.issued(ctx, tpl); err != nil {
		return r, err
	}
	ns, err := s.subKeys(ctx, tpl, k)
	if err != nil {
		return r, err
	}
	r.Missing = ns == nil
	for _, n := range ns {
		r.Remaining += n
	}
	return r, nil
}

// logEvent is one line of the coupon service's JSON log that the checks use.
type logEvent struct {
	Time       time.Time `json:"time"`
	Msg        string    `json:"msg"`
	TemplateID int64     `json:"template_id"`
	RequestID  string    `json:"request_id"`
	Total      int64     `json:"total"`
	Issued     int64     `json:"issued"`
	Before     int64     `json:"before"`
}

// Messages of the coupon service that account for stock.
const (
	msgCommitUnknown = "claim commit outcome unknown; stock left taken"
	msgGiveFailed    = "give stock back; the stock audit will restore it"
	msgUnderRepair   = "stock audit: under-credit repaired by a rebuild"
	msgOverPrefix    = "stock audit: over-credit"
)

var jsonLine = regexp.MustCompile(`^\{.*\}$`)

// events reads the coupon service's log lines about stock since t.
func (s *Stack) events(since time.Time) ([]logEvent, error) {
	f, err := os.Open(s.coupon.log)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []logEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !jsonLine.Match(line) || !strings.Contains(string(line), "stock") {
			continue
		}
		var e logEvent
		if json.Unmarshal(line, &e) != nil || e.Time.Before(since) {
			continue
		}
		out = append(out, e)
	}
	return out, sc.Err()
}
