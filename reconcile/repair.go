package reconcile

import (
	"bufio"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/opencoupon/coupon/internal/dtmquery"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// Repair actions and statuses, as recorded in reconcile_repair.
const (
	ActionRelease = "RELEASE_COUPON"
	ActionReturn  = "RETURN_COUPON"
	ActionManual  = "MANUAL_REVIEW"

	RepairPlanned = "planned" // dry run: what --apply would do
	RepairWait    = "wait"    // not safe yet; the next run looks again
	RepairStarted = "started"
	RepairApplied = "applied"
	RepairFailed  = "failed"
	RepairManual  = "manual"
	RepairDone    = "already_applied"
)

// DTM global transaction statuses (GET /api/dtmsvr/query).
const (
	DTMPrepared  = "prepared"
	DTMSubmitted = "submitted"
	DTMAborting  = "aborting"
	DTMSucceed   = "succeed"
	DTMFailed    = "failed"
	DTMUnknown   = "unknown" // the coordinator has no such transaction
)

// DTMQuery tells a global transaction's status; DTMUnknown when the
// coordinator does not know the gid.
type DTMQuery interface {
	Status(ctx context.Context, gid string) (string, error)
}

// CouponService is the part of the coupon service a repair uses: the TCC
// Cancel (the same code path DTM drives, barrier included), the return of
// a refunded order's coupon (ReturnCoupon, the refund's own path) and a
// read.
type CouponService interface {
	Unlock(ctx context.Context, l Lock) error
	Return(ctx context.Context, r Refund) error
	Coupon(ctx context.Context, userID int64, code string) (CouponState, error)
}

// Refund identifies a coupon a refunded order consumed and did not get
// back.
type Refund struct {
	OrderNo, CouponCode string
	UserID              int64
}

// RequestID is the return's idempotency key: reconcile-<order_no>, or a
// digest of the order number when that would pass the coupon service's 64
// bytes. Every run asks with the same key, so a return is made once.
func (r Refund) RequestID() string {
	if id := "reconcile-" + r.OrderNo; len(id) <= 64 {
		return id
	}
	sum := sha256.Sum256([]byte(r.OrderNo))
	return "reconcile-" + hex.EncodeToString(sum[:])[:54]
}

// Coupon service error reasons a return repair acts on.
const (
	reasonNotReturnable        = "COUPON_NOT_RETURNABLE"
	reasonLockedPendingConfirm = "COUPON_LOCKED_PENDING_CONFIRM"
)

// Lock identifies an orphan lock: the DTM branch that took it and what
// Cancel needs.
type Lock struct {
	GID, BranchID, OrderNo, CouponCode string
	UserID, Amount                     int64
}

// CouponState is a coupon as the service reports it now.
type CouponState struct {
	Status  string // AVAILABLE, LOCKED, USED, EXPIRED
	OrderNo string
	GID     string
}

// holds tells whether the coupon is still locked by l.
func (c CouponState) holds(l Lock) bool {
	return c.Status == couponv1.Coupon_LOCKED.String() && c.OrderNo == l.OrderNo && (c.GID == "" || c.GID == l.GID)
}

// RepairItem is one line of repairs.jsonl: what was (or would be) done
// about one finding.
type RepairItem struct {
	Class      string `json:"class"`
	OrderNo    string `json:"order_no"`
	CouponCode string `json:"coupon_code"`
	Action     string `json:"action"`
	Status     string `json:"status"`
	DTMStatus  string `json:"dtm_status,omitempty"`
	GID        string `json:"gid,omitempty"`
	BranchID   string `json:"branch_id,omitempty"`
	Detail     string `json:"detail"`
}

// RepairSummary counts repair items by status.
type RepairSummary map[string]int

// Repairer plans and, with Apply, carries out the repairs of one run's
// findings. Only ORPHAN_LOCKs and REFUND_COUPON_NOT_RETURNEDs are ever
// changed: a lock only when DTM says its transaction failed, or does not
// know it and the lock is older than TimeoutToFail + Grace; a refunded
// order's coupon only while it is USED by that order. Everything else is
// marked for manual review.
type Repairer struct {
	State   *sql.DB // reconcile_repair; required with Apply
	DTM     DTMQuery
	Coupons CouponService
	// TimeoutToFail is DTM's (the largest any order service uses).
	TimeoutToFail time.Duration
	Grace         time.Duration
	Apply         bool
	Now           func() time.Time
}

// Repair goes through the findings of discrepancies.jsonl (r) of date,
// writes one RepairItem per finding to items and a line per item to
// report. Failed items make the returned error non-nil after all items
// were tried; they are retried by the next run.
func (rp *Repairer) Repair(ctx context.Context, date string, runID int64, r io.Reader, items, report io.Writer) (RepairSummary, error) {
	if rp.Apply && rp.State == nil {
		return nil, errors.New("repair --apply needs the state database (reconcile_repair)")
	}
	if rp.Now == nil {
		rp.Now = time.Now
	}
	sum := RepairSummary{}
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 16<<20)
	failed := 0
	for sc.Scan() {
		var f Finding
		if err := json.Unmarshal(sc.Bytes(), &f); err != nil {
			return sum, fmt.Errorf("read findings: %w", err)
		}
		if f.Resolution != "" {
			continue
		}
		it := rp.one(ctx, date, runID, &f)
		sum[it.Status]++
		if it.Status == RepairFailed {
			failed++
		}
		line, err := json.Marshal(it)
		if err != nil {
			return sum, err
		}
		if _, err := items.Write(append(line, '\n')); err != nil {
			return sum, fmt.Errorf("write repairs: %w", err)
		}
		fmt.Fprintf(report, "%-9s %-15s %-27s order %s coupon %s: %s\n", it.Status, it.Action, it.Class, it.OrderNo, orDash(it.CouponCode), it.Detail)
	}
	if err := sc.Err(); err != nil {
		return sum, fmt.Errorf("read findings: %w", err)
	}
	if failed > 0 {
		return sum, fmt.Errorf("%d repairs failed; they are retried by the next run", failed)
	}
	return sum, nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (rp *Repairer) one(ctx context.Context, date string, runID int64, f *Finding) RepairItem {
	it := RepairItem{Class: f.Class, OrderNo: f.OrderNo, CouponCode: f.CouponCode, Action: ActionManual, GID: f.GID, BranchID: f.BranchID}
	if rp.State != nil {
		prev, err := repairOf(ctx, rp.State, date, f.Key())
		if err != nil {
			it.Status, it.Detail = RepairFailed, err.Error()
			return it
		}
		if prev != nil && prev.Status == RepairApplied {
			it.Action, it.Status, it.DTMStatus = prev.Action, RepairDone, prev.DTMStatus
			it.Detail = "repaired before: " + prev.Detail
			return it
		}
	}
	switch f.Class {
	case ClassOrphanLock:
		rp.orphan(ctx, date, runID, f, &it)
	case ClassRefundCouponNotReturned:
		rp.notReturned(ctx, date, runID, f, &it)
	default:
		it.Status, it.Detail = rp.manual(ctx, date, runID, &it, manualCheck(f))
	}
	return it
}

// notReturned gives a refunded order's coupon back through ReturnCoupon,
// the refund's own path: the coupon service returns it only if it is USED
// by that order, deciding on the coupon row it holds locked, so a return
// the refund's message makes meanwhile and this one cannot both happen.
// The repair asks only for an order the order ledger says is REFUNDED, and
// only while the coupon reads USED by it; a coupon still LOCKED for the
// order waits for its Confirm (the next run looks again), one USED under
// another gid than the refunded payment's goes to a person, and one of a
// template that keeps used coupons is consistent as it is.
func (rp *Repairer) notReturned(ctx context.Context, date string, runID int64, f *Finding, it *RepairItem) {
	if f.UserID == 0 || f.CouponCode == "" || f.OrderStatus != OrderRefunded.String() {
		it.Status, it.Detail = rp.manual(ctx, date, runID, it, fmt.Sprintf("order %s is %s, coupon %q of user %d: check the order and give the coupon back with ReturnCoupon if it was refunded",
			f.OrderNo, orMissing(f.OrderStatus), f.CouponCode, f.UserID))
		return
	}
	ref := Refund{OrderNo: f.OrderNo, CouponCode: f.CouponCode, UserID: f.UserID}
	it.Action = ActionReturn
	// record ends the item; applied ones resolve the finding.
	record := func(status, detail string) {
		it.Status, it.Detail = status, detail
		if !rp.Apply || status == RepairWait {
			return
		}
		if err := saveRepair(ctx, rp.State, date, runID, it, status, detail, rp.Now()); err != nil {
			it.Status, it.Detail = RepairFailed, err.Error()
		}
	}
	before, err := rp.Coupons.Coupon(ctx, ref.UserID, ref.CouponCode)
	if err != nil {
		if permanent(err) {
			// Not the order's user's coupon (or not a coupon at all):
			// returning it to the order's user is wrong and asking again
			// will not change the answer.
			it.Status, it.Detail = rp.manual(ctx, date, runID, it, fmt.Sprintf("coupon %s of order %s cannot be read as user %d's (%v): the order was paid with a coupon its user does not own, or the ledger names the wrong coupon; check the ledger before returning anything",
				ref.CouponCode, ref.OrderNo, ref.UserID, status.Convert(err).Message()))
			return
		}
		it.Status, it.Detail = RepairFailed, fmt.Sprintf("read coupon %s: %v", ref.CouponCode, err)
		return
	}
	switch {
	case before.Status == couponv1.Coupon_LOCKED.String() && before.OrderNo == ref.OrderNo:
		record(RepairWait, fmt.Sprintf("coupon %s is still locked by gid %s for the order: its Confirm has not run; the refund's return waits for it, the next run looks again", ref.CouponCode, before.GID))
		return
	case before.Status != couponv1.Coupon_USED.String() || before.OrderNo != ref.OrderNo:
		detail := fmt.Sprintf("coupon is %s (order %q) now, no longer used by this order: nothing to return", before.Status, before.OrderNo)
		if !rp.Apply {
			detail = "would record: " + detail
			record(RepairPlanned, detail)
			return
		}
		record(RepairApplied, detail)
		return
	case f.GID != "" && before.GID != "" && before.GID != f.GID:
		// USED by the order, but not by the payment that was refunded: a
		// later transaction paid the same order number again, and its use
		// is not this refund's to give back.
		it.Status, it.Detail = rp.manual(ctx, date, runID, it, fmt.Sprintf("coupon %s is USED by order %s under gid %s, but the refunded payment consumed it under gid %s: a later payment of the same order holds it; check the order's payments before returning anything",
			ref.CouponCode, ref.OrderNo, before.GID, f.GID))
		return
	case !rp.Apply:
		record(RepairPlanned, fmt.Sprintf("would return coupon %s of user %d through ReturnCoupon (request_id %s): the order is REFUNDED and the coupon USED by it", ref.CouponCode, ref.UserID, ref.RequestID()))
		return
	}
	if err := saveRepair(ctx, rp.State, date, runID, it, RepairStarted, "order REFUNDED, coupon USED by it", rp.Now()); err != nil {
		it.Status, it.Detail = RepairFailed, err.Error()
		return
	}
	rerr := rp.Coupons.Return(ctx, ref)
	after, err := rp.Coupons.Coupon(ctx, ref.UserID, ref.CouponCode)
	switch {
	case err != nil:
		record(RepairFailed, fmt.Sprintf("read coupon %s after ReturnCoupon (%v): %v", ref.CouponCode, rerr, err))
	case rerr == nil:
		record(RepairApplied, fmt.Sprintf("returned through ReturnCoupon (request_id %s), coupon now %s", ref.RequestID(), after.Status))
	case errorReason(rerr) == reasonLockedPendingConfirm:
		record(RepairWait, fmt.Sprintf("ReturnCoupon: %v; the next run looks again", rerr))
	case errorReason(rerr) == reasonNotReturnable && after.Status == couponv1.Coupon_USED.String() && after.OrderNo == ref.OrderNo:
		record(RepairApplied, fmt.Sprintf("nothing to return, the template keeps used coupons: %v", status.Convert(rerr).Message()))
	case errorReason(rerr) == reasonNotReturnable:
		record(RepairApplied, fmt.Sprintf("coupon is %s (order %q) now, no longer used by this order: nothing to return", after.Status, after.OrderNo))
	default:
		record(RepairFailed, fmt.Sprintf("ReturnCoupon: %v", rerr))
	}
}

// permanent reports whether a coupon service error is an answer that the
// next run would get again (the coupon is not that user's, the request is
// refused as invalid or not allowed), not a transient failure to retry.
func permanent(err error) bool {
	switch status.Code(err) {
	case codes.NotFound, codes.InvalidArgument, codes.PermissionDenied:
		return true
	}
	return false
}

// errorReason is the google.rpc.ErrorInfo reason of a gRPC error.
func errorReason(err error) string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// manual marks an item for review (recorded only with Apply).
func (rp *Repairer) manual(ctx context.Context, date string, runID int64, it *RepairItem, check string) (string, string) {
	it.Action = ActionManual
	if !rp.Apply {
		return RepairPlanned, "would mark for manual review: " + check
	}
	if err := saveRepair(ctx, rp.State, date, runID, it, RepairManual, check, rp.Now()); err != nil {
		return RepairFailed, err.Error()
	}
	return RepairManual, check
}

func (rp *Repairer) orphan(ctx context.Context, date string, runID int64, f *Finding, it *RepairItem) {
	setManual := func(check string) { it.Status, it.Detail = rp.manual(ctx, date, runID, it, check) }
	if f.GID == "" || f.BranchID == "" || f.UserID == 0 || f.LockedAt == nil {
		setManual("the ledger row lacks its DTM gid, branch_id or user_id (a CSV export without branch_id?): look the lock up in coupon_ledger and release it through UnlockCoupon with that branch after checking DTM")
		return
	}
	if f.OrderStatus == OrderPaid.String() || f.OrderStatus == OrderRefunded.String() {
		setManual(fmt.Sprintf("order is %s, so the coupon should have been consumed, not released: check DTM's Confirm of gid %s and the coupon service's logs", f.OrderStatus, f.GID))
		return
	}
	it.Action = ActionRelease // unless DTM's answer rules it out below
	status, err := rp.DTM.Status(ctx, f.GID)
	if err != nil {
		it.Status, it.Detail = RepairFailed, fmt.Sprintf("ask DTM about gid %s: %v", f.GID, err)
		return
	}
	it.DTMStatus = status
	age := rp.Now().Sub(*f.LockedAt)
	switch status {
	case DTMFailed:
	case DTMUnknown:
		if need := rp.TimeoutToFail + rp.Grace; age <= need {
			it.Status, it.Detail = RepairWait, fmt.Sprintf("DTM does not know gid %s and the lock is %s old: released once older than %s", f.GID, age.Round(time.Second), need)
			return
		}
	case DTMPrepared, DTMSubmitted, DTMAborting:
		it.Status, it.Detail = RepairWait, fmt.Sprintf("DTM still holds gid %s as %s and will finish it (a prepared one fails after its TimeoutToFail, submitted and aborting ones are retried): check the coordinator runs and its log for the gid; the next run looks again", f.GID, status)
		return
	default: // succeed
		it.Action = ActionManual
		setManual(fmt.Sprintf("DTM reports gid %s %s but the coupon was never consumed: its Confirm did not reach the coupon service; check the coupon service's and the coordinator's logs, then consume or release by hand", f.GID, status))
		return
	}
	lock := Lock{GID: f.GID, BranchID: f.BranchID, OrderNo: f.OrderNo, CouponCode: f.CouponCode, UserID: f.UserID, Amount: max(f.OrderAmount, 1)}
	it.Action = ActionRelease
	before, err := rp.Coupons.Coupon(ctx, lock.UserID, lock.CouponCode)
	if err != nil {
		it.Status, it.Detail = RepairFailed, fmt.Sprintf("read coupon %s: %v", lock.CouponCode, err)
		return
	}
	why := fmt.Sprintf("DTM reports gid %s %s", f.GID, status)
	if status == DTMUnknown {
		why = fmt.Sprintf("DTM does not know gid %s and the lock is %s old (> TimeoutToFail %s + grace %s)", f.GID, age.Round(time.Second), rp.TimeoutToFail, rp.Grace)
	}
	if !before.holds(lock) {
		detail := fmt.Sprintf("coupon is %s (order %q) now, no longer locked by this order: nothing to release", before.Status, before.OrderNo)
		if !rp.Apply {
			it.Status, it.Detail = RepairPlanned, "would record: "+detail
			return
		}
		it.Status, it.Detail = RepairApplied, detail
		if err := saveRepair(ctx, rp.State, date, runID, it, RepairApplied, detail, rp.Now()); err != nil {
			it.Status, it.Detail = RepairFailed, err.Error()
		}
		return
	}
	if !rp.Apply {
		it.Status, it.Detail = RepairPlanned, fmt.Sprintf("would release coupon %s of user %d through UnlockCoupon (Cancel of gid %s branch %s): %s", lock.CouponCode, lock.UserID, lock.GID, lock.BranchID, why)
		return
	}
	if err := saveRepair(ctx, rp.State, date, runID, it, RepairStarted, why, rp.Now()); err != nil {
		it.Status, it.Detail = RepairFailed, err.Error()
		return
	}
	// Cancel answers OK for anything it cannot release, so the coupon is
	// read again to know what happened.
	status, detail := RepairApplied, ""
	if err := rp.Coupons.Unlock(ctx, lock); err != nil {
		status, detail = RepairFailed, fmt.Sprintf("UnlockCoupon: %v", err)
	} else if after, err := rp.Coupons.Coupon(ctx, lock.UserID, lock.CouponCode); err != nil {
		status, detail = RepairFailed, fmt.Sprintf("read coupon %s after UnlockCoupon: %v", lock.CouponCode, err)
	} else if after.holds(lock) {
		status, detail = RepairFailed, fmt.Sprintf("UnlockCoupon answered OK but coupon %s is still locked by gid %s (a Cancel of this branch may have run before)", lock.CouponCode, lock.GID)
	} else {
		detail = fmt.Sprintf("released through UnlockCoupon, coupon now %s; %s", after.Status, why)
	}
	it.Status, it.Detail = status, detail
	if err := saveRepair(ctx, rp.State, date, runID, it, status, detail, rp.Now()); err != nil {
		it.Status, it.Detail = RepairFailed, err.Error()
	}
}

// manualCheck says what a person should check for a finding.
func manualCheck(f *Finding) string {
	switch f.Class {
	case ClassCouponUsedOrderNotPaid:
		return fmt.Sprintf("coupon %s was consumed but order %s is %s: check whether the order was paid in another system; otherwise give the coupon back (ReturnCoupon) or recover %s", f.CouponCode, f.OrderNo, orMissing(f.OrderStatus), Money(f.AmountAtRisk))
	case ClassOrderPaidCouponNotUsed:
		return fmt.Sprintf("order %s was paid with a discount of %s but coupon %s is still usable: check whether it was used since, then void it or recover the discount", f.OrderNo, Money(f.AmountAtRisk), f.CouponCode)
	case ClassDiscountMismatch:
		return "compare the order's discount with the coupon template's rule and the coupon ledger, then correct the wrong side: " + f.Detail
	case ClassPaymentAmountMismatch:
		return "compare the captured amount with the order's amount − discount at the payment provider; refund or collect the difference: " + f.Detail
	case ClassCouponUsedTwice:
		return fmt.Sprintf("coupon %s was consumed for %s: decide which order used it rightly and recover the discount of the others", f.CouponCode, strings.Join(f.Orders, ", "))
	case ClassPaymentWithoutOrder:
		return "a payment exists for an order that does not: find the order in the order system or refund the customer: " + f.Detail
	case ClassOrderPaidWithoutPayment:
		return "the order is paid but no payment was captured: check the payment provider, then collect the payment or cancel the order: " + f.Detail
	}
	return f.Detail
}

func orMissing(s string) string {
	if s == "" {
		return "missing"
	}
	return s
}

// storedRepair is a row of reconcile_repair.
type storedRepair struct {
	Action, Status, DTMStatus, Detail string
}

func repairOf(ctx context.Context, db *sql.DB, date string, k Key) (*storedRepair, error) {
	var r storedRepair
	err := db.QueryRowContext(ctx, `SELECT action, status, dtm_status, detail FROM reconcile_repair
		WHERE run_date = ? AND class = ? AND order_no = ? AND coupon_code = ?`, date, k.Class, k.OrderNo, k.CouponCode).
		Scan(&r.Action, &r.Status, &r.DTMStatus, &r.Detail)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read repair record: %w", err)
	}
	return &r, nil
}

func saveRepair(ctx context.Context, db *sql.DB, date string, runID int64, it *RepairItem, status, detail string, now time.Time) error {
	_, err := db.ExecContext(ctx, `INSERT INTO reconcile_repair (run_date, class, order_no, coupon_code, action, status, gid, branch_id,
		dtm_status, detail, run_id, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)
		ON DUPLICATE KEY UPDATE action = VALUES(action), status = VALUES(status), dtm_status = VALUES(dtm_status),
		detail = VALUES(detail), run_id = VALUES(run_id), updated_at = VALUES(updated_at)`,
		date, it.Class, it.OrderNo, it.CouponCode, it.Action, status, it.GID, it.BranchID, it.DTMStatus, truncate(detail, 1024), runID, now.UTC(), now.UTC())
	if err != nil {
		return fmt.Errorf("record repair of %s %s: %w", it.Class, it.OrderNo, err)
	}
	return nil
}

// Resolutions returns the findings of date that applied repairs resolved.
func Resolutions(ctx context.Context, db *sql.DB, date string) (map[Key]string, error) {
	rows, err := db.QueryContext(ctx, `SELECT class, order_no, coupon_code, detail, updated_at FROM reconcile_repair WHERE run_date = ? AND status = ?`, date, RepairApplied)
	if err != nil {
		return nil, fmt.Errorf("read repairs: %w", err)
	}
	defer rows.Close()
	out := map[Key]string{}
	for rows.Next() {
		var k Key
		var detail string
		var at time.Time
		if err := rows.Scan(&k.Class, &k.OrderNo, &k.CouponCode, &detail, &at); err != nil {
			return nil, fmt.Errorf("read repairs: %w", err)
		}
		out[k] = fmt.Sprintf("repaired %s: %s", at.UTC().Format(time.RFC3339), detail)
	}
	return out, rows.Err()
}

// DTMHTTP asks a DTM coordinator over its HTTP API (the gRPC API has no query).
type DTMHTTP struct {
	// Addr is the coordinator's HTTP address, e.g. "127.0.0.1:36789" or a URL.
	Addr   string
	Client *http.Client
}

// Status returns the transaction's status, DTMUnknown when there is none.
func (d DTMHTTP) Status(ctx context.Context, gid string) (string, error) {
	c := d.Client
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	st, known, err := dtmquery.Client{Addr: d.Addr, HTTP: c}.Status(ctx, gid)
	if err != nil {
		return "", err
	}
	if !known {
		return DTMUnknown, nil
	}
	return st, nil
}

// CouponGRPC calls the coupon service over gRPC.
type CouponGRPC struct {
	Conn grpc.ClientConnInterface
	// Token is sent as "authorization: Bearer TOKEN" when set (UnlockCoupon
	// needs the order role, GetCoupon the app or order role).
	Token string
	// DTM is the coordinator's gRPC address, sent as dtm-dtm like DTM does.
	DTM string
}

func (c CouponGRPC) ctx(ctx context.Context) context.Context {
	if c.Token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.Token)
	}
	return ctx
}

// Unlock runs the TCC Cancel of the lock's branch, with DTM's barrier
// metadata, exactly as the coordinator would.
func (c CouponGRPC) Unlock(ctx context.Context, l Lock) error {
	ctx = metadata.AppendToOutgoingContext(c.ctx(ctx),
		"dtm-gid", l.GID, "dtm-branch_id", l.BranchID, "dtm-op", "cancel", "dtm-trans_type", "tcc", "dtm-dtm", c.DTM)
	_, err := couponv1.NewCouponServiceClient(c.Conn).UnlockCoupon(ctx, &couponv1.CouponBranchRequest{
		UserId: l.UserID, CouponCode: l.CouponCode, Order: &couponv1.Order{OrderNo: l.OrderNo, UserId: l.UserID, Amount: l.Amount},
	})
	return err
}

// Return runs ReturnCoupon without barrier metadata (the repair is no DTM
// branch): a coupon that cannot come back is refused with its reason.
func (c CouponGRPC) Return(ctx context.Context, r Refund) error {
	_, err := couponv1.NewCouponServiceClient(c.Conn).ReturnCoupon(c.ctx(ctx), &couponv1.ReturnCouponRequest{
		RequestId: r.RequestID(), UserId: r.UserID, CouponCode: r.CouponCode, OrderNo: r.OrderNo,
		Reason: "reconcile: order refunded without its coupon",
	})
	return err
}

// Coupon reads a coupon.
func (c CouponGRPC) Coupon(ctx context.Context, userID int64, code string) (CouponState, error) {
	x, err := couponv1.NewCouponServiceClient(c.Conn).GetCoupon(c.ctx(ctx), &couponv1.GetCouponRequest{UserId: userID, CouponCode: code})
	if err != nil {
		return CouponState{}, err
	}
	return CouponState{Status: x.GetStatus().String(), OrderNo: x.GetOrderNo(), GID: x.GetGid()}, nil
}
