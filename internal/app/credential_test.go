package app_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dtm-labs/client/dtmgrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/opencoupon/coupon/client/branchcred"
	"github.com/opencoupon/coupon/client/coupontcc"
	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/coupontest"
	"github.com/opencoupon/coupon/internal/dtmtest"
	"github.com/opencoupon/coupon/internal/testenv"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// TestNoReusableCredentialInCoordinator runs two TCC orders and a Saga order
// through a real coordinator with the branch headers coupontcc recommends,
// then reads
// everything the coordinator exposes — its HTTP API (query and all), its
// MySQL store (trans_global, trans_branch_op) and its info log — and tries
// every branch header value found there on the coupon service the way a
// reader of the coordinator would: ReturnCoupon, ConsumeCoupon and
// UnlockCoupon for another gid, for another order's coupon, LockCoupon, a
// replay of the Saga's compensation on its own gid after it succeeded, and,
// once the credential has expired, even the calls it was made for.
// Every one is refused by authentication, both coupons stay USED, and the
// transactions themselves committed.
func TestNoReusableCredentialInCoordinator(t *testing.T) {
	dtm := dtmtest.Start(t, dtmtest.Set("log.level", "info"))
	var skew atomic.Int64 // how far the coupon service's auth clock is ahead
	srv := coupontest.Start(t, func(c *app.Config) {
		c.Auth.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
		c.Auth.Coordinator = dtm.HTTPAddr
		// Every value found is tried as a bearer token from one peer: the
		// failed-authentication limit would refuse most of them before
		// authentication does, and the test is about authentication.
		c.Auth.FailureRPS = -1
	})
	tpl := template(t, srv, 10)
	const user = 9101
	type placed struct {
		gid string
		req *couponv1.CouponBranchRequest
	}
	var orders []placed
	for i := range 2 {
		c := claim(t, srv, tpl.Id, user)
		gid := fmt.Sprintf("cred-%d-%d", i, time.Now().UnixNano())
		req := &couponv1.CouponBranchRequest{UserId: user, CouponCode: c.Code,
			Order: &couponv1.Order{OrderNo: "o-" + gid, UserId: user, Amount: 8000, Currency: "CNY"}}
		err := dtmgrpc.TccGlobalTransaction2(dtm.GRPCAddr, gid, func(tcc *dtmgrpc.TccGrpc) {
			tcc.BranchHeaders, tcc.WaitResult = coupontest.BranchHeaders(t, gid, coupontcc.OrderOf(req)), true
		}, func(tcc *dtmgrpc.TccGrpc) error {
			_, err := coupontcc.Enlist(coupontest.AsShop(ctxT(t)), tcc, srv.Addr, req)
			return err
		})
		if err != nil {
			t.Fatalf("order %s: %v", gid, err)
		}
		orders = append(orders, placed{gid, req})
	}
	{
		c := claim(t, srv, tpl.Id, user)
		gid := fmt.Sprintf("cred-saga-%d", time.Now().UnixNano())
		req := &couponv1.CouponBranchRequest{UserId: user, CouponCode: c.Code,
			Order: &couponv1.Order{OrderNo: "o-" + gid, UserId: user, Amount: 8000, Currency: "CNY"}}
		saga := dtmgrpc.NewSagaGrpc(dtm.GRPCAddr, gid, dtmgrpc.WithBranchHeaders(coupontest.BranchHeaders(t, gid, coupontcc.OrderOf(req))))
		saga.WaitResult = true
		saga.Add(srv.Addr+couponv1.CouponService_UseCoupon_FullMethodName, srv.Addr+couponv1.CouponService_UseCouponRevert_FullMethodName, req)
		if err := saga.Submit(); err != nil {
			t.Fatalf("saga %s: %v", gid, err)
		}
		orders = append(orders, placed{gid, req})
	}
	used := func(t *testing.T) {
		t.Helper()
		for _, o := range orders {
			c, err := srv.Coupons.GetCoupon(ctxT(t), &couponv1.GetCouponRequest{UserId: user, CouponCode: o.req.CouponCode})
			if err != nil || c.Status != couponv1.Coupon_USED || c.Gid != o.gid {
				t.Fatalf("coupon %s: %v (gid %s), %v; want USED by %s", o.req.CouponCode, c.GetStatus(), c.GetGid(), err, o.gid)
			}
		}
	}
	used(t)

	// Everything the coordinator shows.
	var exposed []string
	for _, path := range []string{"/api/dtmsvr/query?gid=" + orders[0].gid, "/api/dtmsvr/query?gid=" + orders[1].gid, "/api/dtmsvr/all", "/api/dtmsvr/all?gid=" + orders[0].gid} {
		exposed = append(exposed, httpGet(t, "http://"+dtm.HTTPAddr+path))
	}
	store, err := sql.Open("mysql", dtm.StoreDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for _, table := range []string{"trans_global", "trans_branch_op"} {
		exposed = append(exposed, dumpTable(t, store, table))
	}
	exposed = append(exposed, dtm.Logs())
	found := branchHeadersIn(exposed)
	if len(found) == 0 {
		t.Fatal("no branch headers found in the coordinator's API, store or log; the test would prove nothing")
	}

	conn := srv.Dial(t) // no credential of its own
	call := func(ctx context.Context, method, gid, op string, req any) error {
		transType, resp := "tcc", any(new(couponv1.CouponBranchResponse))
		switch method {
		case couponv1.CouponService_ReturnCoupon_FullMethodName:
			transType, resp = "msg", new(couponv1.ReturnCouponResponse)
		case couponv1.CouponService_UseCoupon_FullMethodName, couponv1.CouponService_UseCouponRevert_FullMethodName:
			transType = "saga"
		}
		ctx = metadata.AppendToOutgoingContext(ctx, "dtm-gid", gid, "dtm-trans_type", transType, "dtm-branch_id", "01", "dtm-op", op, "dtm-dtm", dtm.GRPCAddr)
		return conn.Invoke(ctx, method, req, resp)
	}
	refused := func(t *testing.T, what string, err error) {
		t.Helper()
		if c := status.Code(err); c != codes.Unauthenticated && c != codes.PermissionDenied {
			t.Errorf("%s: %v, want Unauthenticated or PermissionDenied", what, err)
		}
	}
	returnOf := func(o placed) *couponv1.ReturnCouponRequest {
		return &couponv1.ReturnCouponRequest{RequestId: "steal-" + o.gid, UserId: user, CouponCode: o.req.CouponCode, OrderNo: o.req.Order.OrderNo, Reason: "copied credential"}
	}
	attempts := 0
	for _, h := range found {
		for _, as := range asCredential(h) {
			ctx := metadata.AppendToOutgoingContext(ctxT(t), as[0], as[1])
			for i, own := range orders {
				other := orders[(i+1)%len(orders)]
				who := fmt.Sprintf("%s=%.40q… as %s", h[0], h[1], as[0])
				// Another transaction: a made-up gid, and the other order's.
				for _, gid := range []string{"forged-" + own.gid, other.gid} {
					refused(t, who+": ReturnCoupon of "+own.req.CouponCode+" under "+gid, call(ctx, couponv1.CouponService_ReturnCoupon_FullMethodName, gid, "msg", returnOf(own)))
					refused(t, who+": ConsumeCoupon under "+gid, call(ctx, couponv1.CouponService_ConsumeCoupon_FullMethodName, gid, "confirm", own.req))
					refused(t, who+": UnlockCoupon under "+gid, call(ctx, couponv1.CouponService_UnlockCoupon_FullMethodName, gid, "cancel", own.req))
				}
				// Its own gid, the other order's coupon.
				refused(t, who+": ReturnCoupon of the other coupon", call(ctx, couponv1.CouponService_ReturnCoupon_FullMethodName, own.gid, "msg", returnOf(other)))
				refused(t, who+": ConsumeCoupon of the other coupon", call(ctx, couponv1.CouponService_ConsumeCoupon_FullMethodName, own.gid, "confirm", other.req))
				refused(t, who+": UnlockCoupon of the other coupon", call(ctx, couponv1.CouponService_UnlockCoupon_FullMethodName, own.gid, "cancel", other.req))
				// A Try is the order service's own call, never DTM's.
				refused(t, who+": LockCoupon", call(ctx, couponv1.CouponService_LockCoupon_FullMethodName, own.gid, "try", own.req))
				refused(t, who+": UseCouponRevert of the other coupon", call(ctx, couponv1.CouponService_UseCouponRevert_FullMethodName, own.gid, "compensate", other.req))
				// Its own gid and coupon, the compensation DTM never sent:
				// the barrier has not seen it, only the coordinator knows.
				refused(t, who+": UseCouponRevert of its own committed coupon", call(ctx, couponv1.CouponService_UseCouponRevert_FullMethodName, own.gid, "compensate", own.req))
				attempts += 11
			}
		}
	}
	used(t)

	// Expired, a copy is refused even on the calls it was made for.
	skew.Store(int64(branchcred.DefaultTTL + time.Hour))
	for _, h := range found {
		for _, as := range asCredential(h) {
			ctx := metadata.AppendToOutgoingContext(ctxT(t), as[0], as[1])
			for _, own := range orders {
				who := fmt.Sprintf("expired %s=%.40q… as %s", h[0], h[1], as[0])
				refused(t, who+": ReturnCoupon under its own gid", call(ctx, couponv1.CouponService_ReturnCoupon_FullMethodName, own.gid, "msg", returnOf(own)))
				refused(t, who+": UnlockCoupon under its own gid", call(ctx, couponv1.CouponService_UnlockCoupon_FullMethodName, own.gid, "cancel", own.req))
				attempts += 2
			}
		}
	}
	used(t)
	t.Logf("%d header values found, %d calls refused", len(found), attempts)
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return string(b)
}

// dumpTable renders every row of table as text.
func dumpTable(t *testing.T, db *sql.DB, table string) string {
	t.Helper()
	rows, err := db.QueryContext(ctxT(t), "SELECT * FROM "+table)
	if err != nil {
		t.Fatalf("read %s: %v", table, err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var b strings.Builder
	for rows.Next() {
		vals := make([]sql.RawBytes, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatalf("read %s: %v", table, err)
		}
		for _, v := range vals {
			b.Write(v)
			b.WriteByte('\n')
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read %s: %v", table, err)
	}
	return b.String()
}

var branchHeadersObject = regexp.MustCompile(`"branch_headers"\s*:\s*(\{[^{}]*\})`)

// branchHeadersIn finds every branch header (key, value) in texts, in JSON
// as it is or embedded in JSON strings (DTM keeps options as a JSON string).
func branchHeadersIn(texts []string) [][2]string {
	seen := map[[2]string]bool{}
	var out [][2]string
	for _, text := range texts {
		for range 3 { // unescape up to two levels of embedding
			for _, m := range branchHeadersObject.FindAllStringSubmatch(text, -1) {
				var h map[string]string
				if json.Unmarshal([]byte(m[1]), &h) != nil {
					continue
				}
				for k, v := range h {
					if kv := [2]string{k, v}; !seen[kv] {
						seen[kv] = true
						out = append(out, kv)
					}
				}
			}
			text = strings.NewReplacer(`\\`, `\`, `\"`, `"`).Replace(text)
		}
	}
	return out
}

// asCredential is every way a reader could present a header value found:
// under its own key, as a branch credential and as a bearer token.
func asCredential(h [2]string) [][2]string {
	ways := [][2]string{h, {branchcred.Header, h[1]}, {"authorization", h[1]}, {"authorization", "Bearer " + strings.TrimPrefix(h[1], "Bearer ")}}
	var out [][2]string
	for _, w := range ways {
		if !slices.Contains(out, w) {
			out = append(out, w)
		}
	}
	return out
}

// TestSagaCompensatesWithCoordinatorCheck: with the coordinator check on, a
// Saga that fails is still compensated on its branch credential (DTM sends
// the compensation while the Saga is aborting) and its coupon comes back.
func TestSagaCompensatesWithCoordinatorCheck(t *testing.T) {
	dtm := dtmtest.Start(t)
	srv := coupontest.Start(t, func(c *app.Config) { c.Auth.Coordinator = dtm.HTTPAddr })
	tpl := template(t, srv, 10)
	const user = 9201
	spent := claim(t, srv, tpl.Id, user)
	fresh := claim(t, srv, tpl.Id, user)
	req := func(code, gid string) *couponv1.CouponBranchRequest {
		return &couponv1.CouponBranchRequest{UserId: user, CouponCode: code,
			Order: &couponv1.Order{OrderNo: "o-" + gid, UserId: user, Amount: 8000, Currency: "CNY"}}
	}
	run := func(gid string, reqs ...*couponv1.CouponBranchRequest) error {
		var orders []branchcred.Order
		for _, r := range reqs {
			orders = append(orders, coupontcc.OrderOf(r))
		}
		saga := dtmgrpc.NewSagaGrpc(dtm.GRPCAddr, gid, dtmgrpc.WithBranchHeaders(coupontest.BranchHeaders(t, gid, orders...)))
		saga.WaitResult = true
		for _, r := range reqs {
			saga.Add(srv.Addr+couponv1.CouponService_UseCoupon_FullMethodName, srv.Addr+couponv1.CouponService_UseCouponRevert_FullMethodName, r)
		}
		return saga.Submit()
	}
	g1 := fmt.Sprintf("comp-1-%d", time.Now().UnixNano())
	if err := run(g1, req(spent.Code, g1)); err != nil {
		t.Fatalf("saga using %s: %v", spent.Code, err)
	}
	// The second branch wants the coupon the first saga used: refused, so
	// DTM compensates the first branch, which had used the fresh coupon.
	g2 := fmt.Sprintf("comp-2-%d", time.Now().UnixNano())
	if err := run(g2, req(fresh.Code, g2), req(spent.Code, g2)); err == nil {
		t.Fatal("saga reusing a used coupon succeeded")
	}
	status := func(code string) couponv1.Coupon_Status {
		c, err := srv.Coupons.GetCoupon(ctxT(t), &couponv1.GetCouponRequest{UserId: user, CouponCode: code})
		if err != nil {
			t.Fatalf("GetCoupon: %v", err)
		}
		return c.Status
	}
	testenv.Eventually(t, 30*time.Second, "the compensated coupon AVAILABLE again", func() bool { return status(fresh.Code) == couponv1.Coupon_AVAILABLE })
	if got := status(spent.Code); got != couponv1.Coupon_USED {
		t.Fatalf("the first saga's coupon is %s, want USED", got)
	}
}
