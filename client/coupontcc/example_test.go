package coupontcc_test

import (
	"context"
	"fmt"
	"log"

	"github.com/dtm-labs/client/dtmgrpc"

	"github.com/opencoupon/coupon/client/coupontcc"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// An order service places an order as one TCC transaction: the coupon's
// discount comes first, then its own branches use the payable amount.
// It needs a DTM server and the coupon service, so it has no output.
func ExampleEnlist() {
	const dtm, coupons = "127.0.0.1:36790", "127.0.0.1:9090"
	order := &couponv1.Order{OrderNo: "1001", UserId: 42, Amount: 6000, Currency: "CNY", ProductLine: "food"}
	err := dtmgrpc.TccGlobalTransaction(dtm, "order-1001", func(tcc *dtmgrpc.TccGrpc) error {
		resp, err := coupontcc.Enlist(context.Background(), tcc, coupons, &couponv1.CouponBranchRequest{
			UserId: 42, CouponCode: "0AKXPNRD80400DDQ", Order: order,
		})
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
