package chaos

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"
)

// The invariants, numbered as in docs/chaos.md.
var invariantNames = map[int]string{
	1: "no coupon consumed twice; paid orders used their coupon",
	2: "finished transactions agree across services",
	3: "stock conserved per template (after the audit)",
	4: "no negative stock or balance; limits and request_ids hold",
	5: "acknowledged claims exist; failed claims gave stock back",
	6: "reconcile finds no discrepancy, twice",
	7: "every committed change has exactly one event",
}

// edgeInvariant is checked only by the scenarios that flood the service's
// listeners (Scenario.edge); the others report the seven above.
const (
	edgeInvariant     = 8
	edgeInvariantName = "under a connection flood: connected callers keep working, a new caller gets in, no EMFILE"
)

// Invariant is one invariant's verdict for a scenario.
type Invariant struct {
	ID         int      `json:"id"`
	Name       string   `json:"name"`
	Status     string   `json:"status"` // held, violated, skipped
	Violations int      `json:"violations"`
	First      []string `json:"first_offending,omitempty"` // ids: coupon codes, order numbers, gids, templates
	Details    []string `json:"details,omitempty"`
	Note       string   `json:"note,omitempty"`
}

const (
	held     = "held"
	violated = "violated"
	skipped  = "skipped"
	maxFirst = 5
)

// verdict collects violations per invariant.
type verdict struct{ inv map[int]*Invariant }

func newVerdict() *verdict {
	v := &verdict{inv: map[int]*Invariant{}}
	for id, name := range invariantNames {
		v.inv[id] = &Invariant{ID: id, Name: name, Status: held}
	}
	return v
}

func (v *verdict) fail(inv int, id, format string, args ...any) {
	x := v.inv[inv]
	x.Status = violated
	x.Violations++
	if len(x.First) < maxFirst {
		x.First = append(x.First, id)
		x.Details = append(x.Details, id+": "+fmt.Sprintf(format, args...))
	}
}

func (v *verdict) skip(inv int, note string) {
	x := v.inv[inv]
	if x.Status == held {
		x.Status = skipped
	}
	x.Note = note
}

func (v *verdict) note(inv int, note string) { v.inv[inv].Note = note }

func (v *verdict) list() []Invariant {
	out := make([]Invariant, 0, len(v.inv))
	for _, x := range v.inv {
		out = append(out, *x)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// txnView is one global transaction (or direct branch sequence) with what
// its order should look like once it finished.
type txnView struct {
	gid, orderNo, coupon string
	user, amount         int64
	status               string // DTM's, or by construction for direct calls
	payment, shop        bool
	own                  bool   // one of the scenario's own transactions
	why, reason          string // of an abort: abortRefusal, abortFault or abortDeliberate, and the refusal
	refund               string // the DTM status of the order's refund, if it was refunded
}

// resolveUndecided settles the direct transactions whose Try answer was
// lost: they committed if the coupon's ledger has their CONSUME row, and
// failed otherwise; the invariants then check the rest of the story.
func resolveUndecided(ts []txnView, sn *snapshot) {
	consumed := map[string]bool{}
	for _, l := range sn.ledger {
		if l.Op == "CONSUME" {
			consumed[l.GID+"/"+l.Code] = true
		}
	}
	for i := range ts {
		if ts[i].status != statusUndecided {
			continue
		}
		ts[i].status = statusFailed
		if consumed[ts[i].gid+"/"+ts[i].coupon] {
			ts[i].status, ts[i].why = statusSucceed, ""
		}
	}
}

// committedOrders maps order numbers to whether any transaction of the order
// committed (DTM succeed, or a direct Confirm sequence).
func committedOrders(ts []txnView) map[string]bool {
	out := map[string]bool{}
	for _, t := range ts {
		if t.status == statusSucceed {
			out[t.orderNo] = true
		} else if _, ok := out[t.orderNo]; !ok {
			out[t.orderNo] = false
		}
	}
	return out
}

// checkTransactions checks invariants 1 and 2 against the transactions.
func checkTransactions(v *verdict, sn *snapshot, ts []txnView) {
	committed := committedOrders(ts)
	consumes := map[string][]string{} // coupon code → order numbers of CONSUME rows
	for _, l := range sn.ledger {
		if l.Op == "CONSUME" {
			consumes[l.Code] = append(consumes[l.Code], l.OrderNo)
		}
	}
	// 1: consumed at most once, and the ledger counts every consumption.
	codes := make([]string, 0, len(consumes))
	for c := range consumes {
		codes = append(codes, c)
	}
	sort.Strings(codes)
	for _, c := range codes {
		if os := consumes[c]; len(os) > 1 {
			v.fail(1, c, "consumed %d times (orders %s)", len(os), strings.Join(os, ", "))
		}
	}
	for _, c := range sn.coupons {
		if c.Status != couponUsed {
			continue
		}
		if len(consumes[c.Code]) == 0 {
			v.fail(1, c.Code, "USED by order %q but the ledger has no CONSUME row", c.OrderNo)
		}
		if ok, known := committed[c.OrderNo]; known && !ok {
			v.fail(1, c.Code, "USED by order %s, whose transactions all failed", c.OrderNo)
		}
	}
	// 1: a paid order's coupon is USED by it.
	for _, o := range sortedOrders(sn.orders) {
		if o.Status == "PAID" && o.Coupon != "" {
			c := sn.byCode[o.Coupon]
			switch {
			case c == nil:
				v.fail(1, o.OrderNo, "PAID with coupon %s, which does not exist", o.Coupon)
			case c.Status != couponUsed || c.OrderNo != o.OrderNo:
				v.fail(1, o.OrderNo, "PAID with coupon %s, which is %s (order %q)", o.Coupon, couponStatusName[c.Status], c.OrderNo)
			}
		}
	}
	// 2: every finished transaction agrees across the services.
	for _, t := range ts {
		if !finished(t.status) {
			v.fail(2, t.gid, "still %s after the quiescence deadline (order %s)", t.status, t.orderNo)
			continue
		}
		c := sn.byCode[t.coupon]
		p := sn.payments[t.orderNo]
		o := sn.orders[t.orderNo]
		if t.status == statusSucceed && t.shop && o != nil && o.Status == "REFUNDED" {
			checkRefunded(v, sn, t, o, p, c)
			continue
		}
		if t.status == statusSucceed {
			if t.shop && (o == nil || o.Status != "PAID") {
				v.fail(2, t.gid, "succeeded but order %s is %s", t.orderNo, orderStatus(o))
			}
			if t.payment && (p == nil || p.GID != t.gid || p.Status != "CAPTURED") {
				v.fail(2, t.gid, "succeeded but the payment of %s is %s", t.orderNo, paymentStatus(p, t.gid))
			}
			if t.coupon != "" && (c == nil || c.Status != couponUsed || c.OrderNo != t.orderNo) {
				v.fail(2, t.gid, "succeeded but coupon %s is %s", t.coupon, couponState(c))
			}
			if t.payment && p != nil && p.Status == "CAPTURED" && c != nil && c.Status == couponUsed && c.OrderNo == t.orderNo && p.Amount != t.amount-c.Discount {
				v.fail(2, t.gid, "captured %d for order %s of %d with discount %d", p.Amount, t.orderNo, t.amount, c.Discount)
			}
			continue
		}
		// Failed, or never reached a coordinator.
		if t.shop && (o == nil || o.Status != "CANCELLED") {
			v.fail(2, t.gid, "%s but order %s is %s", t.status, t.orderNo, orderStatus(o))
		}
		if t.payment && p != nil && p.GID == t.gid && p.Status != "RELEASED" {
			v.fail(2, t.gid, "%s but its payment of %s is %s", t.status, t.orderNo, p.Status)
		}
		if c != nil && c.OrderNo == t.orderNo && !committed[t.orderNo] && (c.Status == couponLocked || c.Status == couponUsed) {
			v.fail(2, t.gid, "%s but coupon %s is still %s by order %s", t.status, t.coupon, couponStatusName[c.Status], t.orderNo)
		}
	}
	// 2: no order left half-way.
	for _, o := range sortedOrders(sn.orders) {
		if o.Status == "PENDING" {
			v.fail(2, o.OrderNo, "order still PENDING after quiescence (gid %s)", o.GID)
		}
	}
}

// checkRefunded checks a committed order that was refunded afterwards
// (invariant 2): its refund finished, its payment went back, and its coupon,
// when the template returns coupons, is back — AVAILABLE or EXPIRED with a
// RETURN ledger row after the order's CONSUME. A coupon that is still USED
// (or LOCKED) by a refunded order is money the shop gave back twice: once
// as the discount, once as a coupon never returned.
func checkRefunded(v *verdict, sn *snapshot, t txnView, o *shopOrder, p *payment, c *couponRow) {
	if t.refund != statusSucceed {
		v.fail(2, t.gid, "order %s is REFUNDED but its refund is %s", t.orderNo, t.refund)
	}
	if p == nil || p.GID != t.gid || p.Status != "REFUNDED" {
		v.fail(2, t.gid, "order %s is REFUNDED but its payment is %s", t.orderNo, paymentStatus(p, t.gid))
	}
	if o.Coupon == "" {
		return
	}
	if c == nil {
		v.fail(2, t.gid, "order %s is REFUNDED and its coupon %s is missing", t.orderNo, o.Coupon)
		return
	}
	if !sn.templates[c.TemplateID].Returnable {
		return
	}
	consumed, returned := false, false
	for _, l := range sn.ledger {
		if l.Code != c.Code || l.OrderNo != t.orderNo {
			continue
		}
		switch l.Op {
		case "CONSUME":
			consumed, returned = true, false
		case "RETURN":
			returned = consumed
		}
	}
	switch {
	case c.Status != couponAvailable && c.Status != couponExpired:
		v.fail(2, t.gid, "order %s is REFUNDED but its coupon %s is %s", t.orderNo, c.Code, couponState(c))
	case !returned:
		v.fail(2, t.gid, "order %s is REFUNDED; its coupon %s is %s without a RETURN after its CONSUME", t.orderNo, c.Code, couponState(c))
	}
}

func sortedOrders(m map[string]*shopOrder) []*shopOrder {
	out := make([]*shopOrder, 0, len(m))
	for _, o := range m {
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].OrderNo < out[j].OrderNo })
	return out
}

func orderStatus(o *shopOrder) string {
	if o == nil {
		return "missing"
	}
	return o.Status
}

func paymentStatus(p *payment, gid string) string {
	switch {
	case p == nil:
		return "missing"
	case p.GID != gid:
		return p.Status + " under gid " + p.GID
	}
	return p.Status
}

func couponState(c *couponRow) string {
	if c == nil {
		return "missing"
	}
	if c.OrderNo == "" {
		return couponStatusName[c.Status]
	}
	return fmt.Sprintf("%s by order %s", couponStatusName[c.Status], c.OrderNo)
}

// checkLimits checks invariant 4.
func checkLimits(v *verdict, sn *snapshot, r *run, maxDaily int64) {
	issued := map[int64]int64{}
	perUser := map[[2]int64]int64{}
	daily := map[string]int64{} // user/day/template (0 = all)
	// A returned coupon's use stays counted on the day it was locked (a
	// refund must not reopen the daily limits): the day of its last LOCK.
	lastOp, lockDay := map[string]string{}, map[string]string{}
	for _, l := range sn.ledger {
		lastOp[l.Code] = l.Op
		if l.Op == "LOCK" {
			lockDay[l.Code] = l.Day
		}
	}
	for _, c := range sn.coupons {
		issued[c.TemplateID]++
		perUser[[2]int64{c.UserID, c.TemplateID}]++
		day := c.LockedDay
		inUse := (c.Status == couponLocked || c.Status == couponUsed) && day != ""
		if !inUse && lastOp[c.Code] == "RETURN" && lockDay[c.Code] != "" {
			day, inUse = lockDay[c.Code], true
		}
		if inUse {
			daily[fmt.Sprintf("%d/%s/%d", c.UserID, day, c.TemplateID)]++
			daily[fmt.Sprintf("%d/%s/0", c.UserID, day)]++
		}
	}
	for _, id := range r.tpls {
		t := sn.templates[id]
		if issued[id] > t.Total {
			v.fail(4, fmt.Sprintf("template %d", id), "oversold: %d issued of %d", issued[id], t.Total)
		}
		for i, n := range sn.redis[id] {
			if n < 0 {
				v.fail(4, fmt.Sprintf("template %d", id), "stock sub-key %d holds %d", i, n)
			}
		}
	}
	for k, n := range perUser {
		if t := sn.templates[k[1]]; t.PerUser > 0 && n > t.PerUser {
			v.fail(4, fmt.Sprintf("user %d", k[0]), "holds %d coupons of template %d, limit %d", n, k[1], t.PerUser)
		}
	}
	for k, n := range sn.claimCount {
		if n != perUser[k] {
			v.fail(4, fmt.Sprintf("user %d", k[0]), "claim_count says %d of template %d, the records %d", n, k[1], perUser[k])
		}
	}
	for k, n := range perUser {
		if _, ok := sn.claimCount[k]; !ok && n > 0 {
			v.fail(4, fmt.Sprintf("user %d", k[0]), "%d coupons of template %d and no claim_count row", n, k[1])
		}
	}
	for k, n := range daily {
		var tpl int64
		fmt.Sscanf(k[strings.LastIndex(k, "/")+1:], "%d", &tpl)
		limit := maxDaily
		if tpl != 0 {
			limit = sn.templates[tpl].DailyLimit
		}
		if limit > 0 && n > limit {
			v.fail(4, "user "+k[:strings.Index(k, "/")], "%d coupons in use on %s (template %d, 0 = all), daily limit %d", n, k, tpl, limit)
		}
		if got := sn.dailyUse[k]; got != n {
			v.fail(4, "user "+k[:strings.Index(k, "/")], "daily_use %s counts %d, the coupons in use %d", k, got, n)
		}
	}
	for k, got := range sn.dailyUse {
		if _, ok := daily[k]; !ok && got != 0 {
			v.fail(4, "user "+k[:strings.Index(k, "/")], "daily_use %s counts %d, no coupon in use", k, got)
		}
	}
	for req, cs := range sn.byRequest {
		if len(cs) > 1 {
			v.fail(4, req, "request_id has %d coupons", len(cs))
		}
	}
	r.rec.mu.Lock()
	for _, x := range r.rec.replays {
		v.fail(4, x[:strings.Index(x, ":")], "a retry answered another coupon (%s)", x)
	}
	r.rec.mu.Unlock()
	// Money: never negative, nothing left frozen, every unit accounted for.
	captured := map[int64]int64{}
	for _, p := range sn.payments {
		if p.Status == "CAPTURED" {
			captured[p.UserID] += p.Amount
		}
	}
	users, deposit := r.allUsers()
	for _, u := range users {
		a, ok := sn.accounts[u]
		if !ok {
			v.fail(4, fmt.Sprintf("user %d", u), "account missing")
			continue
		}
		if a.Balance < 0 || a.Frozen < 0 {
			v.fail(4, fmt.Sprintf("user %d", u), "balance %d, frozen %d", a.Balance, a.Frozen)
		}
		if a.Frozen != 0 {
			v.fail(4, fmt.Sprintf("user %d", u), "%d still frozen after every transaction finished", a.Frozen)
		}
		if got := a.Balance + a.Frozen + captured[u]; got != deposit[u] {
			v.fail(4, fmt.Sprintf("user %d", u), "deposited %d but balance %d + frozen %d + captured %d = %d", deposit[u], a.Balance, a.Frozen, captured[u], got)
		}
	}
}

// checkClaims checks the per-claim half of invariant 5.
func checkClaims(v *verdict, sn *snapshot, r *run) {
	r.rec.mu.Lock()
	defer r.rec.mu.Unlock()
	ids := make([]string, 0, len(r.rec.claims))
	for id := range r.rec.claims {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		c := r.rec.claims[id]
		rows := sn.byRequest[id]
		switch c.Outcome {
		case acked:
			if len(rows) == 0 {
				v.fail(5, id, "acknowledged coupon %s (user %d) has no record", c.Code, c.UserID)
			} else if rows[0].Code != c.Code || rows[0].UserID != c.UserID || rows[0].TemplateID != c.TemplateID {
				v.fail(5, id, "acknowledged coupon %s but the record is %s of user %d", c.Code, rows[0].Code, rows[0].UserID)
			}
		case refused:
			if len(rows) > 0 && c.Tries == 1 {
				v.fail(5, id, "refused (%s) but coupon %s exists", c.Reason, rows[0].Code)
			}
		}
	}
}

// stockAccount is a template's stock before the audit: what the claims took
// and did not give back, and how much of that the log and the faults explain.
type stockAccount struct {
	deficit, surplus int64
	allowed          int64
	why              []string
}

// accountStock takes a template's stock as read right after the load, at
// readAt, adds what audit repairs before readAt took care of (a repair
// after it mends what the reading already counts, so it is not added),
// and counts what may legitimately be missing: claims whose commit outcome
// was unknown (the service logs them) or whose give-back failed, and claims
// whose answer was lost while Redis or the coupon service was faulted.
func accountStock(ctx context.Context, s *Stack, r *run, tpl int64, pre stockReading, readAt time.Time, evs []logEvent, faultWindows [][2]time.Time) stockAccount {
	var a stockAccount
	if !pre.Missing {
		d := pre.Total - pre.Issued - pre.Remaining
		if d > 0 {
			a.deficit += d
		} else {
			a.surplus -= d
		}
	}
	unknownReq := map[string]bool{}
	for _, e := range evs {
		if e.TemplateID != tpl {
			continue
		}
		// With the counters missing at the reading, every repair counts.
		repairedBefore := pre.Missing || e.Time.Before(readAt)
		switch {
		case e.Msg == msgUnderRepair && repairedBefore:
			a.deficit += e.Total - e.Issued - e.Before
			a.why = append(a.why, fmt.Sprintf("audit repaired %d", e.Total-e.Issued-e.Before))
		case strings.HasPrefix(e.Msg, msgOverPrefix) && repairedBefore:
			a.surplus += e.Before - (e.Total - e.Issued)
		case e.Msg == msgCommitUnknown:
			unknownReq[e.RequestID] = true
		case e.Msg == msgGiveFailed:
			a.allowed++
		}
	}
	r.rec.mu.Lock()
	defer r.rec.mu.Unlock()
	var logged, lost int64
	for req := range unknownReq {
		if c := r.rec.claims[req]; c == nil || c.Outcome != acked {
			logged++
		}
	}
	for _, c := range r.rec.claims {
		if c.TemplateID != tpl || c.Outcome != unknown || unknownReq[c.RequestID] {
			continue
		}
		for _, w := range faultWindows {
			if c.Start.Before(w[1]) && c.End.After(w[0]) {
				lost++
				break
			}
		}
	}
	a.allowed += logged + lost
	if logged > 0 {
		a.why = append(a.why, fmt.Sprintf("%d commits of unknown outcome", logged))
	}
	if lost > 0 {
		a.why = append(a.why, fmt.Sprintf("%d answers lost to Redis or process faults", lost))
	}
	return a
}
