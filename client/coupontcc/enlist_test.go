package coupontcc_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dtm-labs/client/dtmgrpc"
	"github.com/dtm-labs/logger"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opencoupon/coupon/client/coupontcc"
	"github.com/opencoupon/coupon/internal/dtmtest"
	"github.com/opencoupon/coupon/internal/testenv"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// fakeCoupons records the branch calls DTM and Enlist make.
type fakeCoupons struct {
	couponv1.UnimplementedCouponServiceServer
	refuse string // when set, LockCoupon refuses with this reason
	mu     sync.Mutex
	calls  []string
}

func (f *fakeCoupons) record(op string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, op)
}

func (f *fakeCoupons) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeCoupons) LockCoupon(_ context.Context, r *couponv1.CouponBranchRequest) (*couponv1.CouponBranchResponse, error) {
	f.record("lock")
	if f.refuse != "" {
		st, _ := status.New(codes.Aborted, "refused").WithDetails(&errdetails.ErrorInfo{Domain: "coupon", Reason: f.refuse})
		return nil, st.Err()
	}
	return &couponv1.CouponBranchResponse{CouponCode: r.GetCouponCode(), Status: couponv1.Coupon_LOCKED,
		DiscountAmount: 500, PayableAmount: r.GetOrder().GetAmount() - 500, OrderNo: r.GetOrder().GetOrderNo()}, nil
}

func (f *fakeCoupons) ConsumeCoupon(context.Context, *couponv1.CouponBranchRequest) (*couponv1.CouponBranchResponse, error) {
	f.record("consume")
	return &couponv1.CouponBranchResponse{}, nil
}

func (f *fakeCoupons) UnlockCoupon(context.Context, *couponv1.CouponBranchRequest) (*couponv1.CouponBranchResponse, error) {
	f.record("unlock")
	return &couponv1.CouponBranchResponse{}, nil
}

func TestEnlist(t *testing.T) {
	logger.InitLog("error")
	dtm := dtmtest.Start(t)
	errLater := errors.New("payment refused")
	tests := []struct {
		name       string
		refuse     string
		after      error // what the rest of the TCC function returns
		wantCalls  []string
		wantReason string
	}{
		{"committed", "", nil, []string{"lock", "consume"}, ""},
		{"rolled back later", "", errLater, []string{"lock", "unlock"}, ""},
		{"refused", "RULE_NOT_MET", nil, []string{"lock", "unlock"}, "RULE_NOT_MET"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := &fakeCoupons{refuse: tt.refuse}
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			gs := grpc.NewServer()
			couponv1.RegisterCouponServiceServer(gs, fake)
			go func() { _ = gs.Serve(lis) }()
			t.Cleanup(gs.Stop)

			var discount int64
			gid := testenv.Unique(t) + string(rune('a'+i))
			err = dtmgrpc.TccGlobalTransaction2(dtm.GRPCAddr, gid, func(tcc *dtmgrpc.TccGrpc) { tcc.WaitResult = true }, func(tcc *dtmgrpc.TccGrpc) error {
				resp, err := coupontcc.Enlist(context.Background(), tcc, lis.Addr().String(), &couponv1.CouponBranchRequest{
					UserId: 1, CouponCode: "0AKXPNRD80400DDQ", Order: &couponv1.Order{OrderNo: gid, UserId: 1, Amount: 6000},
				})
				if err != nil {
					return err
				}
				discount = resp.GetDiscountAmount()
				return tt.after
			})
			reason, refused := coupontcc.Refusal(err)
			switch {
			case tt.wantReason != "" && (!refused || reason != tt.wantReason):
				t.Errorf("transaction error = %v; want a refusal %s", err, tt.wantReason)
			case tt.wantReason == "" && !errors.Is(err, tt.after):
				t.Errorf("transaction error = %v; want %v", err, tt.after)
			case tt.wantReason == "" && discount != 500:
				t.Errorf("discount = %d; want 500", discount)
			}
			// WaitResult makes Submit and Abort wait for the branches, but
			// allow for a retry by the coordinator.
			testenv.Eventually(t, 10*time.Second, "branch calls", func() bool { return slices.Equal(fake.Calls(), tt.wantCalls) })
		})
	}
}
