package tccbench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dtm-labs/client/dtmgrpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opencoupon/coupon/client/coupontcc"
	shopv1 "github.com/opencoupon/coupon/examples/shop/proto/shop/v1"
	"github.com/opencoupon/coupon/internal/auth"
	"github.com/opencoupon/coupon/participant"
	couponredis "github.com/opencoupon/coupon/participant/redis"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// The orders of the coupon scenarios: 80.00 CNY of food, which the
// template's threshold, product line, usage rule and daily limits all pass,
// for 5.00 off.
const (
	orderAmount    = 8000
	couponDiscount = 500
	accountBalance = 1_000_000
)

// couponScenario prepares one template with one AVAILABLE coupon per item,
// each held by a user of its own (user base+i), and with payment an account
// per user in the payment database.
func (b *bench) couponScenario(ctx context.Context, name, short string, base int64, payment bool) (*scenario, error) {
	n := b.items()
	tpl, err := b.template(ctx, name, n)
	if err != nil {
		return nil, err
	}
	codes, err := b.insertCoupons(ctx, tpl, base, n)
	if err != nil {
		return nil, err
	}
	// The stock went to the inserted coupons, as if claimed: the stock
	// audit would otherwise find the counters over-credited.
	if err := couponredis.New(b.coupon.Redis(), b.redisPrefix()).Stock.Set(ctx, tpl.Id, tpl.SubStockCount, 0); err != nil {
		return nil, fmt.Errorf("set stock counters: %w", err)
	}
	if payment {
		if err := b.insertPaymentAccounts(ctx, base, n); err != nil {
			return nil, err
		}
	}
	sc := &scenario{name: name, short: short, n: n}
	sc.tx = func(ctx context.Context, gid string, i int) error {
		user := base + int64(i)
		req := &couponv1.CouponBranchRequest{UserId: user, CouponCode: codes[i], Order: &couponv1.Order{
			OrderNo: gid, UserId: user, Amount: orderAmount, Currency: "CNY", ProductLine: "food"}}
		headers, err := coupontcc.BranchHeaders(coupontcc.Signer{Caller: "shop", Key: auth.DevBranchKey}, gid, coupontcc.OrderOf(req))
		if err != nil {
			return err
		}
		return dtmgrpc.TccGlobalTransaction2(b.o.dtm, gid, func(t *dtmgrpc.TccGrpc) {
			t.Context = ctx
			t.BranchHeaders = headers
		}, func(t *dtmgrpc.TccGrpc) error {
			resp, err := coupontcc.Enlist(coupontcc.WithToken(ctx, auth.DevTokenShop), t, b.couponAddr, req)
			if err != nil || !payment {
				return err
			}
			return t.CallBranch(&shopv1.PaymentBranchRequest{OrderNo: gid, UserId: user, Amount: resp.PayableAmount},
				b.paymentURL+shopv1.PaymentService_FreezeTry_FullMethodName,
				b.paymentURL+shopv1.PaymentService_CaptureConfirm_FullMethodName,
				b.paymentURL+shopv1.PaymentService_UnfreezeCancel_FullMethodName,
				&emptypb.Empty{})
		})
	}
	sc.settled = func(ctx context.Context) (func(int) bool, error) {
		used, err := b.usedCoupons(ctx, tpl.Id)
		if err != nil || !payment {
			return func(i int) bool { return used[codes[i]] }, err
		}
		captured, err := b.capturedPayments(ctx)
		return func(i int) bool { return used[codes[i]] && captured[base+int64(i)] }, err
	}
	return sc, nil
}

// template creates and approves (by another admin) a fixed-amount template
// with every kind of check a Try makes: threshold, product line, a usage
// rule and a daily use limit.
func (b *bench) template(ctx context.Context, name string, stock int) (*couponv1.CouponTemplate, error) {
	admin := couponv1.NewAdminServiceClient(b.couponConn)
	now := time.Now()
	camp, err := admin.CreateCampaign(ctx, &couponv1.CreateCampaignRequest{
		Name: "bench " + name, CampaignType: "PROMOTION", CreatedBy: "alice",
		StartTime: timestamppb.New(now.Add(-time.Hour)), EndTime: timestamppb.New(now.Add(30 * 24 * time.Hour)),
	})
	if err != nil {
		return nil, fmt.Errorf("create campaign: %w", err)
	}
	tpl, err := admin.CreateTemplate(ctx, &couponv1.CreateTemplateRequest{
		CampaignId: camp.Id, Name: "bench 5 off 50 food", CouponType: couponv1.CouponTemplate_FIXED_AMOUNT,
		DiscountAmount: couponDiscount, MinOrderAmount: 5000, ProductLines: []string{"food"},
		UsageRule:  `order.currency == "CNY" && order.amount <= 10000000`,
		TotalStock: int64(stock), PerUserLimit: 1, DailyUseLimit: 1,
		ValidFrom: timestamppb.New(now.Add(-time.Hour)), ValidUntil: timestamppb.New(now.Add(30 * 24 * time.Hour)),
		ValidDaysAfterClaim: 7, CreatedBy: "alice",
	})
	if err != nil {
		return nil, fmt.Errorf("create template: %w", err)
	}
	if tpl, err = admin.ApproveTemplate(auth.AsToken(ctx, auth.DevTokenBob), &couponv1.ApproveTemplateRequest{TemplateId: tpl.Id, Version: tpl.GetVersion(), ApprovedBy: "bob"}); err != nil {
		return nil, fmt.Errorf("approve template: %w", err)
	}
	return tpl, nil
}

// insertCoupons writes n AVAILABLE coupons of tpl straight into the shard
// tables, one for each user base..base+n-1, as claims would have, and
// returns their codes by item.
func (b *bench) insertCoupons(ctx context.Context, tpl *couponv1.CouponTemplate, base int64, n int) ([]string, error) {
	ids, err := participant.NewIDGen(1023, nil) // not the service's node
	if err != nil {
		return nil, err
	}
	store := b.coupon.Store()
	now := time.Now().UTC()
	expire := now.Add(7 * 24 * time.Hour)
	codes := make([]string, n)
	byTable := map[int][][]any{}
	for i := range n {
		user := base + int64(i)
		id := ids.Next()
		codes[i] = participant.CouponCode(id)
		t := store.ShardMap.TableOf(user)
		byTable[t] = append(byTable[t], []any{id, codes[i], tpl.Id, tpl.CampaignId, user, "bench-" + codes[i],
			participant.CouponAvailable, now, expire, now})
	}
	var wg sync.WaitGroup
	errs := make([]error, len(b.couponShards))
	for s, db := range b.couponShards {
		wg.Go(func() {
			for _, t := range store.ShardMap.TablesOf(s) {
				if err := insertRows(ctx, db, fmt.Sprintf(`INSERT INTO coupon_%04d (id, code, template_id, campaign_id,
 user_id, request_id, status, claimed_at, expire_at, updated_at) VALUES `, t), byTable[t]); err != nil {
					errs[s] = fmt.Errorf("insert coupons into shard %d: %w", s, err)
					return
				}
			}
		})
	}
	wg.Wait()
	return codes, errors.Join(errs...)
}

// insertPaymentAccounts opens a funded payment account for each user.
func (b *bench) insertPaymentAccounts(ctx context.Context, base int64, n int) error {
	now := time.Now().UTC()
	rows := make([][]any, n)
	for i := range rows {
		rows[i] = []any{base + int64(i), accountBalance, 0, now, now}
	}
	if err := insertRows(ctx, b.paymentDB, `INSERT INTO accounts (user_id, balance, frozen, created_at, updated_at) VALUES `, rows); err != nil {
		return fmt.Errorf("insert payment accounts: %w", err)
	}
	return nil
}

// usedCoupons reads the codes of the template's USED coupons.
func (b *bench) usedCoupons(ctx context.Context, templateID int64) (map[string]bool, error) {
	store := b.coupon.Store()
	used := map[string]bool{}
	for s, db := range b.couponShards {
		for _, t := range store.ShardMap.TablesOf(s) {
			err := queryEach(ctx, db, fmt.Sprintf(`SELECT code FROM coupon_%04d WHERE template_id = ? AND status = ?`, t),
				[]any{templateID, participant.CouponUsed}, func(r *sql.Rows) error {
					var code string
					err := r.Scan(&code)
					used[code] = true
					return err
				})
			if err != nil {
				return nil, fmt.Errorf("read used coupons: %w", err)
			}
		}
	}
	return used, nil
}

// capturedPayments reads the users whose payment was captured.
func (b *bench) capturedPayments(ctx context.Context) (map[int64]bool, error) {
	captured := map[int64]bool{}
	err := queryEach(ctx, b.paymentDB, `SELECT user_id FROM payments WHERE status = 'CAPTURED'`, nil, func(r *sql.Rows) error {
		var user int64
		err := r.Scan(&user)
		captured[user] = true
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read captured payments: %w", err)
	}
	return captured, nil
}

func queryEach(ctx context.Context, db *sql.DB, q string, args []any, fn func(*sql.Rows) error) error {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}
