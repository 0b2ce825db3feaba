package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	shopv1 "github.com/opencoupon/coupon/examples/shop/proto/shop/v1"
	"github.com/opencoupon/coupon/internal/auth"
	"github.com/opencoupon/coupon/internal/relay"
	couponeventsv1 "github.com/opencoupon/coupon/proto/coupon/events/v1"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// demo drives a running service through the admin and claim flows and
// prints what happened.
func demo(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:9090", "coupon gRPC address")
	shop := fs.String("shop", "127.0.0.1:9190", "sample shop gRPC address (empty skips the orders)")
	events := fs.String("events", "nats://127.0.0.1:4223", "NATS of the service's lifecycle events, to show this run's (empty skips them)")
	tokens := auth.DevTokens()
	fs.StringVar(&tokens.Admin, "admin-token", tokens.Admin, "bearer token of alice, the admin who creates")
	approver := fs.String("approver-token", auth.DevTokenBob, "bearer token of bob, the admin who approves")
	fs.StringVar(&tokens.App, "app-token", tokens.App, "bearer token of the app (claims and reads)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(tokens.Interceptor()))
	if err != nil {
		return err
	}
	defer conn.Close()
	admin, coupons := couponv1.NewAdminServiceClient(conn), couponv1.NewCouponServiceClient(conn)
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	demoPermissions(ctx, admin, coupons, tokens.App)

	run := fmt.Sprintf("demo-%d", time.Now().UnixNano())
	now := time.Now()
	camp, err := admin.CreateCampaign(ctx, &couponv1.CreateCampaignRequest{
		RequestId: run + "-campaign", Name: "Demo double eleven", CampaignType: "PROMOTION", CreatedBy: "alice",
		StartTime: timestamppb.New(now.Add(-time.Minute)), EndTime: timestamppb.New(now.Add(7 * 24 * time.Hour)),
	})
	if err != nil {
		return fmt.Errorf("create campaign: %w", err)
	}
	tpl, err := admin.CreateTemplate(ctx, &couponv1.CreateTemplateRequest{
		RequestId: run + "-template", CampaignId: camp.Id, Name: "¥10 off ¥50 food", CouponType: couponv1.CouponTemplate_FIXED_AMOUNT,
		DiscountAmount: 1000, MinOrderAmount: 5000, ProductLines: []string{"food"}, TotalStock: 3, PerUserLimit: 1,
		ValidFrom: timestamppb.New(now.Add(-time.Minute)), ValidUntil: timestamppb.New(now.Add(7 * 24 * time.Hour)),
		ValidDaysAfterClaim: 3, CreatedBy: "alice",
	})
	if err != nil {
		return fmt.Errorf("create template: %w", err)
	}
	fmt.Printf("campaign %d %q created by alice; template %d %q is %s (stock %d, 1 per user)\n",
		camp.Id, camp.Name, tpl.Id, tpl.Name, tpl.Status, tpl.TotalStock)
	if _, err := admin.ApproveTemplate(ctx, &couponv1.ApproveTemplateRequest{TemplateId: tpl.Id, Version: tpl.GetVersion(), ApprovedBy: "alice"}); err != nil {
		fmt.Printf("alice approves her own template: refused, %s\n", describe(err))
	}
	if tpl, err = admin.ApproveTemplate(auth.AsToken(ctx, *approver), &couponv1.ApproveTemplateRequest{TemplateId: tpl.Id, Version: tpl.GetVersion(), ApprovedBy: "bob"}); err != nil {
		return fmt.Errorf("approve: %w", err)
	}
	fmt.Printf("bob approves it: template is %s\n\n", tpl.Status)

	steps := []struct {
		what string
		req  *couponv1.ClaimCouponRequest
	}{
		{"user 1001 claims", &couponv1.ClaimCouponRequest{RequestId: run + "-a", UserId: 1001, TemplateId: tpl.Id}},
		{"user 1001 retries the same request", &couponv1.ClaimCouponRequest{RequestId: run + "-a", UserId: 1001, TemplateId: tpl.Id}},
		{"user 1001 claims again (new request)", &couponv1.ClaimCouponRequest{RequestId: run + "-b", UserId: 1001, TemplateId: tpl.Id}},
		{"user 1002 claims", &couponv1.ClaimCouponRequest{RequestId: run + "-c", UserId: 1002, TemplateId: tpl.Id}},
		{"user 1003 claims", &couponv1.ClaimCouponRequest{RequestId: run + "-d", UserId: 1003, TemplateId: tpl.Id}},
		{"user 1004 claims", &couponv1.ClaimCouponRequest{RequestId: run + "-e", UserId: 1004, TemplateId: tpl.Id}},
		{"user 1005 reuses 1002's request id", &couponv1.ClaimCouponRequest{RequestId: run + "-c", UserId: 1005, TemplateId: tpl.Id}},
	}
	w := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(w, "STEP\tREQUEST\tRESULT\tCOUPON\tEXPIRES")
	codes := map[int64]string{}
	for _, s := range steps {
		c, err := coupons.ClaimCoupon(ctx, s.req)
		if err != nil {
			fmt.Fprintf(w, "%s\t%s\trefused: %s\t-\t-\n", s.what, s.req.RequestId[len(run):], describe(err))
			continue
		}
		codes[c.UserId] = c.Code
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", s.what, s.req.RequestId[len(run):], c.Status, c.Code, c.ExpireAt.AsTime().Format(time.DateTime))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	st, err := admin.GetTemplateStats(ctx, &couponv1.GetTemplateStatsRequest{TemplateId: tpl.Id})
	if err != nil {
		return fmt.Errorf("stats: %w", err)
	}
	fmt.Printf("\nstats: total %d, remaining %d, issued %d (available %d, locked %d, used %d, expired %d)\n",
		st.TotalStock, st.RemainingStock, st.Issued, st.Available, st.Locked, st.Used, st.Expired)
	if st.Issued != st.TotalStock-st.RemainingStock {
		return fmt.Errorf("stats do not add up: issued %d != total %d - remaining %d", st.Issued, st.TotalStock, st.RemainingStock)
	}
	if *shop != "" {
		if err := demoOrders(ctx, *shop, coupons, run, codes); err != nil {
			return err
		}
	}
	if *events == "" {
		return nil
	}
	return demoEvents(ctx, *events, tpl.Id)
}

// demoPermissions shows the service refusing callers without a credential
// or without the role.
func demoPermissions(ctx context.Context, admin couponv1.AdminServiceClient, coupons couponv1.CouponServiceClient, appToken string) {
	fmt.Println("Callers and roles")
	_, err := admin.ListCampaigns(auth.WithoutToken(ctx), &couponv1.ListCampaignsRequest{})
	fmt.Printf("  AdminService.ListCampaigns without a credential: %s\n", describe(err))
	_, err = admin.ListCampaigns(auth.AsToken(ctx, appToken), &couponv1.ListCampaignsRequest{})
	fmt.Printf("  AdminService.ListCampaigns as the app:           %s\n", describe(err))
	_, err = coupons.LockCoupon(auth.AsToken(ctx, appToken), &couponv1.CouponBranchRequest{UserId: 1, CouponCode: "x", Order: &couponv1.Order{OrderNo: "demo"}})
	fmt.Printf("  CouponService.LockCoupon as the app:             %s\n\n", describe(err))
}

// demoOrders places three orders through the sample shop, each one DTM TCC
// transaction over the coupon, the payment and the order row, then a Saga
// order and a refund.
func demoOrders(ctx context.Context, addr string, coupons couponv1.CouponServiceClient, run string, codes map[int64]string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	orders, pay := shopv1.NewOrderServiceClient(conn), shopv1.NewPaymentServiceClient(conn)
	for _, u := range []int64{1001, 1003} {
		if _, err := pay.Deposit(ctx, &shopv1.DepositRequest{UserId: u, Amount: 100_00}); err != nil {
			fmt.Printf("\nshop at %s not reachable (%s): skipping the orders\n", addr, describe(err))
			return nil
		}
	}
	fmt.Printf("\nOrders through the sample shop (one DTM transaction each: coupon + payment + order row; TCC unless marked)\n")
	steps := []struct {
		what   string
		user   int64
		amount int64
		line   string
	}{
		{"user 1001 pays ¥80 of food with the coupon", 1001, 80_00, "food"},
		{"user 1002 (no balance) orders ¥80 of food", 1002, 80_00, "food"},
		{"user 1003 orders ¥30 of food (below ¥50)", 1003, 30_00, "food"},
	}
	w := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ORDER\tSTATUS\tDISCOUNT\tPAYABLE\tREASON\tCOUPON AFTER")
	for i, s := range steps {
		code := codes[s.user]
		o, err := orders.CreateOrder(ctx, &shopv1.CreateOrderRequest{
			OrderNo: fmt.Sprintf("%s-order-%d", run, i+1), UserId: s.user, Amount: s.amount, Currency: "CNY",
			ProductLine: s.line, CouponCode: code,
		})
		if err != nil {
			fmt.Fprintf(w, "%s\terror: %s\t-\t-\t-\t-\n", s.what, describe(err))
			continue
		}
		after := "-"
		if code != "" {
			if c, err := coupons.GetCoupon(ctx, &couponv1.GetCouponRequest{UserId: s.user, CouponCode: code}); err == nil {
				after = c.Status.String()
			}
		}
		reason := o.FailureReason
		if reason == "" {
			reason = "-"
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\t%s\n", s.what, o.Status, o.DiscountAmount, o.PayableAmount, reason, after)
	}
	demoSagaAndRefund(ctx, w, orders, coupons, run, codes)
	return w.Flush()
}

// demoSagaAndRefund adds a Saga order (user 1003 uses the coupon its first
// order could not) and the refund of the first order, which gives user 1001
// the money and the coupon back through a DTM 2-phase message; each row
// shows the coupon's state after it.
func demoSagaAndRefund(ctx context.Context, w io.Writer, orders shopv1.OrderServiceClient, coupons couponv1.CouponServiceClient, run string, codes map[int64]string) {
	couponAfter := func(user int64) string {
		c, err := coupons.GetCoupon(ctx, &couponv1.GetCouponRequest{UserId: user, CouponCode: codes[user]})
		if err != nil {
			return describe(err)
		}
		return c.Status.String()
	}
	row := func(what string, o *shopv1.Order, err error, user int64) {
		if err != nil {
			fmt.Fprintf(w, "%s\terror: %s\t-\t-\t-\t-\n", what, describe(err))
			return
		}
		reason := o.FailureReason
		if reason == "" {
			reason = "-"
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\t%s\n", what, o.Status, o.DiscountAmount, o.PayableAmount, reason, couponAfter(user))
	}
	o, err := orders.CreateOrder(ctx, &shopv1.CreateOrderRequest{
		OrderNo: run + "-order-saga", UserId: 1003, Amount: 60_00, Currency: "CNY", ProductLine: "food",
		CouponCode: codes[1003], Mode: "saga",
	})
	row("user 1003 pays ¥60 of food with the coupon, as a Saga", o, err, 1003)
	o, err = orders.RefundOrder(ctx, &shopv1.RefundOrderRequest{OrderNo: run + "-order-1", Reason: "demo refund"})
	row("user 1001's order is refunded (2-phase message)", o, err, 1001)
}

// describe renders a gRPC error as "Code REASON".
func describe(err error) string {
	if err == nil {
		return "OK"
	}
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			return fmt.Sprintf("%s %s", st.Code(), ei.Reason)
		}
	}
	return fmt.Sprintf("%s %s", st.Code(), st.Message())
}

// demoEvents prints the lifecycle events of the demo's template as a
// subscriber of the COUPON_EVENTS stream sees them (examples/events is a
// complete consumer).
func demoEvents(ctx context.Context, url string, template int64) error {
	nc, err := nats.Connect(url, nats.Timeout(2*time.Second))
	if err != nil {
		fmt.Printf("\nevents: NATS at %s not reachable (%s): skipping them\n", url, err)
		return nil
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cons, err := js.OrderedConsumer(ctx, relay.DefaultStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		fmt.Printf("\nevents: no %s stream at %s (%s): is events.url set?\n", relay.DefaultStream, url, err)
		return nil
	}
	fmt.Printf("\nLifecycle events of this run's template, from NATS JetStream %s (docs/events.md)\n", relay.DefaultStream)
	w := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TYPE\tCOUPON\tSEQ\tUSER\tORDER\tDISCOUNT")
	// The relay publishes within its poll interval; stop once a second
	// passes with nothing new.
	seen, quiet := 0, 0
	for quiet < 2 && ctx.Err() == nil {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(500*time.Millisecond))
		if err != nil {
			return err
		}
		got := 0
		for m := range batch.Messages() {
			got++
			var e couponeventsv1.Event
			if proto.Unmarshal(m.Data(), &e) != nil || e.GetTemplateId() != template {
				continue
			}
			seen++
			code, seq := e.GetCouponCode(), fmt.Sprint(e.GetSequence())
			if code == "" {
				code, seq = fmt.Sprintf("template v%d", e.GetTemplateVersion()), "-"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%d\n", e.GetType(), code, seq, e.GetUserId(), e.GetOrderNo(), e.GetDiscountAmount())
		}
		if got == 0 {
			quiet++
		} else {
			quiet = 0
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Printf("%d events\n", seen)
	return nil
}
