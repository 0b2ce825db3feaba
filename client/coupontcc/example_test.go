package coupontcc_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/dtm-labs/client/dtmgrpc"

	"github.com/opencoupon/coupon/client/branchcred"
	"github.com/opencoupon/coupon/client/coupontcc"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// An order service places an order as one TCC transaction: the coupon's
// discount comes first, then its own branches use the payable amount.
// Its bearer token goes only on the Try it makes itself; the branch headers
// DTM stores carry a credential good only for this transaction's coupon.
// It needs a DTM server and the coupon service, so it has no output.
func ExampleEnlist() {
	const dtm, coupons, gid = "127.0.0.1:36790", "127.0.0.1:9090", "order-1001"
	signer := coupontcc.Signer{Caller: "shop", Key: branchcred.Key{ID: "shop-2026-12", Secret: os.Getenv("SHOP_BRANCH_SECRET")}}
	req := &couponv1.CouponBranchRequest{
		UserId: 42, CouponCode: "0AKXPNRD80400DDQ",
		Order: &couponv1.Order{OrderNo: "1001", UserId: 42, Amount: 6000, Currency: "CNY", ProductLine: "food"},
	}
	headers, err := coupontcc.BranchHeaders(signer, gid, coupontcc.OrderOf(req))
	if err != nil {
		log.Fatal(err)
	}
	err = dtmgrpc.TccGlobalTransaction2(dtm, gid, func(tcc *dtmgrpc.TccGrpc) {
		tcc.BranchHeaders = headers
	}, func(tcc *dtmgrpc.TccGrpc) error {
		resp, err := coupontcc.Enlist(coupontcc.WithToken(context.Background(), os.Getenv("SHOP_TOKEN")), tcc, coupons, req)
		if err != nil {
			return err // DTM unlocks the coupon if it was locked
		}
		fmt.Println("discount", resp.GetDiscountAmount(), "to pay", resp.GetPayableAmount())
		// ... tcc.CallBranch for the payment of resp.PayableAmount and the order row.
		return nil
	})
	if reason, refused := coupontcc.Refusal(err); refused {
		fmt.Println("order cancelled:", reason) // e.g. RULE_NOT_MET
	} else if err != nil {
		log.Printf("order failed: %v", err)
	}
}
