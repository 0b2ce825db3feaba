package rpc_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opencoupon/coupon/participant"
	couponmysql "github.com/opencoupon/coupon/participant/mysql"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

func TestParsePhone(t *testing.T) {
	tests := []struct {
		in, want, masked string
	}{
		{"+8613800138000", "+8613800138000", "+86138****8000"},
		{"13800138000", "+8613800138000", "+86138****8000"},
		{" 138-0013-8000 ", "+8613800138000", "+86138****8000"},
		{"+86 139 0000 1111", "+8613900001111", "+86139****1111"},
		{"+12025550123", "+12025550123", "+120****0123"},
		{"+447911123456", "+447911123456", "+4479****3456"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p, err := participant.ParsePhone(tt.in)
			if err != nil {
				t.Fatalf("ParsePhone(%q): %v", tt.in, err)
			}
			if p.E164() != tt.want || p.Masked() != tt.masked || fmt.Sprint(p) != tt.masked {
				t.Fatalf("ParsePhone(%q) = %s (masked %s, printed %v), want %s masked %s", tt.in, p.E164(), p.Masked(), p, tt.want, tt.masked)
			}
		})
	}
	for _, bad := range []string{"", "12345", "12800138000", "1390013900", "138001380001", "+8612800138000",
		"+86 10 1234 5678", "+0123456789", "+1234567890123456", "++8613800138000", "8613800138000x", "+86(138)00138000"} {
		t.Run("bad "+bad, func(t *testing.T) {
			_, err := participant.ParsePhone(bad)
			if participant.ErrorCode(err) != participant.EINVALID {
				t.Fatalf("ParsePhone(%q) error = %v, want invalid", bad, err)
			}
			if bad != "" && strings.Contains(err.Error(), bad) {
				t.Fatalf("error %q repeats the input", err)
			}
		})
	}
	t.Run("logged masked", func(t *testing.T) {
		var buf bytes.Buffer
		p, _ := participant.ParsePhone("13800138000")
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("bind", "phone", p)
		if strings.Contains(buf.String(), "13800138000") || !strings.Contains(buf.String(), "+86138****8000") {
			t.Fatalf("log line %s, want the phone masked", buf.String())
		}
	})
}

func (f *fixture) store() *couponmysql.Stores { return f.srv.App.Store() }

func mustPhone(t *testing.T, s string) participant.Phone {
	t.Helper()
	p, err := participant.ParsePhone(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (f *fixture) claimByPhone(t *testing.T, requestID, phone string, tplID int64) *couponv1.Coupon {
	t.Helper()
	c, err := f.srv.Coupons.ClaimCouponByPhone(ctxT(t), &couponv1.ClaimCouponByPhoneRequest{RequestId: requestID, Phone: phone, TemplateId: tplID})
	if err != nil {
		t.Fatalf("ClaimCouponByPhone(%s): %v", requestID, err)
	}
	return c
}

func (f *fixture) userCoupons(t *testing.T, user int64) []*couponv1.Coupon {
	t.Helper()
	l, err := f.srv.Coupons.ListUserCoupons(ctxT(t), &couponv1.ListUserCouponsRequest{UserId: user})
	if err != nil {
		t.Fatalf("ListUserCoupons: %v", err)
	}
	return l.Coupons
}

// pending counts the phone's coupons of the template still waiting.
func (f *fixture) pending(t *testing.T, phone string, tplID int64) int32 {
	t.Helper()
	n, err := f.store().Phones.PendingClaimed(ctxT(t), mustPhone(t, phone), tplID)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// issued counts the template's coupons everywhere, pending or not.
func (f *fixture) issued(t *testing.T, tplID int64) (pending, users int64) {
	t.Helper()
	pending, err := f.store().Phones.PendingIssued(ctxT(t), tplID)
	if err != nil {
		t.Fatal(err)
	}
	all, err := f.store().Coupons.Issued(ctxT(t), tplID) // counts pending coupons too
	if err != nil {
		t.Fatal(err)
	}
	return pending, all - pending
}

// sameTime compares to the microsecond, as the database stores times.
func sameTime(a, b *timestamppb.Timestamp) bool {
	return a.AsTime().Truncate(time.Microsecond).Equal(b.AsTime().Truncate(time.Microsecond))
}

func codesOf(cs []*couponv1.Coupon) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Code
	}
	slices.Sort(out)
	return out
}

func TestClaimByPhone(t *testing.T) {
	f := newFixture(t)
	tpl := f.template(t, 100, 2)
	c := f.claimByPhone(t, "p-1", "13800138000", tpl.Id)
	if c.UserId != 0 || c.Status != couponv1.Coupon_AVAILABLE || c.TemplateId != tpl.Id || c.RequestId != "p-1" {
		t.Fatalf("coupon = %+v, want AVAILABLE for no user", c)
	}
	if !c.ExpireAt.AsTime().Equal(tpl.ValidUntil.AsTime()) {
		t.Fatalf("expire_at = %v, want the template's valid_until %v", c.ExpireAt.AsTime(), tpl.ValidUntil.AsTime())
	}

	// Idempotent on request_id, whatever form the phone is written in.
	again := f.claimByPhone(t, "p-1", "+86 138 0013 8000", tpl.Id)
	if again.Code != c.Code {
		t.Fatalf("retry code = %s, want %s", again.Code, c.Code)
	}
	other := f.template(t, 10, 0)
	_, err := f.srv.Coupons.ClaimCouponByPhone(ctxT(t), &couponv1.ClaimCouponByPhoneRequest{RequestId: "p-1", Phone: "13800138000", TemplateId: other.Id})
	wantErr(t, err, codes.FailedPrecondition, "REQUEST_ID_CONFLICT")
	_, err = f.srv.Coupons.ClaimCouponByPhone(ctxT(t), &couponv1.ClaimCouponByPhoneRequest{RequestId: "p-1", Phone: "13900139000", TemplateId: tpl.Id})
	wantErr(t, err, codes.FailedPrecondition, "REQUEST_ID_CONFLICT")
	_, err = f.srv.Coupons.ClaimCoupon(ctxT(t), &couponv1.ClaimCouponRequest{RequestId: "p-1", UserId: 5, TemplateId: tpl.Id})
	wantErr(t, err, codes.FailedPrecondition, "REQUEST_ID_CONFLICT")

	// The per-user limit applies to the phone while its coupons wait.
	f.claimByPhone(t, "p-2", "+8613800138000", tpl.Id)
	_, err = f.srv.Coupons.ClaimCouponByPhone(ctxT(t), &couponv1.ClaimCouponByPhoneRequest{RequestId: "p-3", Phone: "13800138000", TemplateId: tpl.Id})
	wantErr(t, err, codes.FailedPrecondition, "USER_LIMIT_REACHED")
	f.claimByPhone(t, "p-4", "13900139000", tpl.Id)

	if n := f.pending(t, "13800138000", tpl.Id); n != 2 {
		t.Fatalf("pending coupons of the phone = %d, want 2", n)
	}
	if pending, users := f.issued(t, tpl.Id); pending != 3 || users != 0 {
		t.Fatalf("issued pending %d, to users %d; want 3 and 0", pending, users)
	}
	if st := f.stats(t, tpl.Id); st.RemainingStock != 97 {
		t.Fatalf("remaining stock = %d, want 97 (refusals give stock back)", st.RemainingStock)
	}
	if st := f.stats(t, other.Id); st.RemainingStock != 10 {
		t.Fatalf("conflicting request took stock: remaining %d", st.RemainingStock)
	}
}

// claimAllByPhone runs n claims by phone at once and counts successes and
// refusal reasons.
func claimAllByPhone(t *testing.T, cl couponv1.CouponServiceClient, n int, req func(i int) *couponv1.ClaimCouponByPhoneRequest) (map[string]int, []*couponv1.Coupon) {
	t.Helper()
	return concurrently(t, n, func(i int) (*couponv1.Coupon, error) { return cl.ClaimCouponByPhone(ctxT(t), req(i)) })
}

func TestClaimByPhoneNeverOversells(t *testing.T) {
	f := newFixture(t)
	tpl := f.template(t, 20, 0)
	reasons, got := claimAllByPhone(t, f.srv.Coupons, 60, func(i int) *couponv1.ClaimCouponByPhoneRequest {
		return &couponv1.ClaimCouponByPhoneRequest{RequestId: fmt.Sprintf("so-%d", i), Phone: fmt.Sprintf("1370000%04d", i), TemplateId: tpl.Id}
	})
	if len(got) != 20 || reasons["FailedPrecondition/SOLD_OUT"] != 40 || len(reasons) != 1 {
		t.Fatalf("got %d coupons and refusals %v, want 20 and 40 FailedPrecondition/SOLD_OUT", len(got), reasons)
	}
	if codes := codesOf(got); len(slices.Compact(codes)) != 20 {
		t.Fatalf("codes issued twice: %v", codes)
	}
	if pending, _ := f.issued(t, tpl.Id); pending != 20 {
		t.Fatalf("pending coupons = %d, want 20", pending)
	}
	if st := f.stats(t, tpl.Id); st.RemainingStock != 0 {
		t.Fatalf("remaining stock = %d, want 0", st.RemainingStock)
	}

	// One phone claiming at once gets exactly the per-user limit.
	limited := f.template(t, 100, 3)
	reasons, got = claimAllByPhone(t, f.srv.Coupons, 30, func(i int) *couponv1.ClaimCouponByPhoneRequest {
		return &couponv1.ClaimCouponByPhoneRequest{RequestId: fmt.Sprintf("lim-%d", i), Phone: "13600136000", TemplateId: limited.Id}
	})
	if len(got) != 3 || reasons["FailedPrecondition/USER_LIMIT_REACHED"] != 27 {
		t.Fatalf("got %d coupons and refusals %v, want 3 and 27 USER_LIMIT_REACHED", len(got), reasons)
	}
	if st := f.stats(t, limited.Id); st.RemainingStock != 97 {
		t.Fatalf("remaining stock = %d, want 97", st.RemainingStock)
	}
}

func TestBindPhoneMovesCoupons(t *testing.T) {
	f := newFixture(t)
	tpl := f.template(t, 100, 3)
	const phone, user = "13800138000", int64(501)
	a := f.claimByPhone(t, "b-1", phone, tpl.Id)
	b := f.claimByPhone(t, "b-2", phone, tpl.Id)

	res, err := f.srv.Coupons.BindPhone(ctxT(t), &couponv1.BindPhoneRequest{UserId: user, Phone: "+8613800138000"})
	if err != nil {
		t.Fatalf("BindPhone: %v", err)
	}
	if got, want := codesOf(res.Coupons), codesOf([]*couponv1.Coupon{a, b}); !slices.Equal(got, want) {
		t.Fatalf("moved %v, want %v", got, want)
	}
	for _, c := range res.Coupons {
		if c.UserId != user || c.Status != couponv1.Coupon_AVAILABLE || (c.Id != a.Id && c.Id != b.Id) {
			t.Fatalf("moved coupon %+v, want the same coupon, AVAILABLE, for user %d", c, user)
		}
		if want := map[int64]*couponv1.Coupon{a.Id: a, b.Id: b}[c.Id]; c.RequestId != want.RequestId ||
			!sameTime(c.ExpireAt, want.ExpireAt) || !sameTime(c.ClaimedAt, want.ClaimedAt) {
			t.Fatalf("moved coupon %+v changed from %+v", c, want)
		}
	}
	if got := codesOf(f.userCoupons(t, user)); !slices.Equal(got, codesOf(res.Coupons)) {
		t.Fatalf("user's coupons %v, want %v", got, codesOf(res.Coupons))
	}
	if n := f.pending(t, phone, tpl.Id); n != 0 {
		t.Fatalf("%d coupons still pending", n)
	}

	// A second bind is a no-op; another user cannot take the phone.
	res, err = f.srv.Coupons.BindPhone(ctxT(t), &couponv1.BindPhoneRequest{UserId: user, Phone: phone})
	if err != nil || len(res.Coupons) != 0 {
		t.Fatalf("second BindPhone = %v, %v; want no coupons", res, err)
	}
	_, err = f.srv.Coupons.BindPhone(ctxT(t), &couponv1.BindPhoneRequest{UserId: user + 1, Phone: phone})
	wantErr(t, err, codes.FailedPrecondition, "PHONE_BOUND_TO_OTHER_USER")

	// A retry of a claim made before the bind finds the moved coupon; a new
	// claim by the bound phone is the user's, under the user's limit, which
	// counts the moved coupons.
	if c := f.claimByPhone(t, "b-1", phone, tpl.Id); c.Code != a.Code || c.UserId != user {
		t.Fatalf("retry after bind = %s for user %d, want %s for %d", c.Code, c.UserId, a.Code, user)
	}
	c := f.claimByPhone(t, "b-3", phone, tpl.Id)
	if c.UserId != user {
		t.Fatalf("claim by bound phone went to user %d, want %d", c.UserId, user)
	}
	_, err = f.srv.Coupons.ClaimCoupon(ctxT(t), &couponv1.ClaimCouponRequest{RequestId: "b-4", UserId: user, TemplateId: tpl.Id})
	wantErr(t, err, codes.FailedPrecondition, "USER_LIMIT_REACHED")
	if got := len(f.userCoupons(t, user)); got != 3 {
		t.Fatalf("user has %d coupons, want 3", got)
	}
	if pending, users := f.issued(t, tpl.Id); pending != 0 || users != 3 {
		t.Fatalf("issued pending %d, to users %d; want 0 and 3", pending, users)
	}
}

func TestBindPhonePastUserLimit(t *testing.T) {
	f := newFixture(t)
	tpl := f.template(t, 100, 2)
	const phone, user = "13700137000", int64(777)
	for i := range 2 {
		if _, err := f.srv.Coupons.ClaimCoupon(ctxT(t), &couponv1.ClaimCouponRequest{RequestId: fmt.Sprintf("u-%d", i), UserId: user, TemplateId: tpl.Id}); err != nil {
			t.Fatalf("ClaimCoupon: %v", err)
		}
		f.claimByPhone(t, fmt.Sprintf("p-%d", i), phone, tpl.Id)
	}
	// The limit refuses claims; coupons claimed within it are all moved.
	res, err := f.srv.Coupons.BindPhone(ctxT(t), &couponv1.BindPhoneRequest{UserId: user, Phone: phone})
	if err != nil || len(res.Coupons) != 2 {
		t.Fatalf("BindPhone = %v, %v; want 2 coupons", res, err)
	}
	if got := len(f.userCoupons(t, user)); got != 4 {
		t.Fatalf("user has %d coupons, want 4", got)
	}
	if n, err := f.store().Coupons.Claimed(ctxT(t), user, tpl.Id); err != nil || n != 4 {
		t.Fatalf("claim count = %d, %v; want 4", n, err)
	}
	_, err = f.srv.Coupons.ClaimCouponByPhone(ctxT(t), &couponv1.ClaimCouponByPhoneRequest{RequestId: "p-9", Phone: phone, TemplateId: tpl.Id})
	wantErr(t, err, codes.FailedPrecondition, "USER_LIMIT_REACHED")
}

// TestBindPhoneCrash stops a bind after each of its steps, as a crash
// would, by running the store's steps directly, then checks that the next
// BindPhone, ListUserCoupons or GetCoupon finishes the move with nothing
// duplicated or lost.
func TestBindPhoneCrash(t *testing.T) {
	f := newFixture(t)
	tpl := f.template(t, 1000, 5)
	steps := []struct {
		name string
		run  func(ctx context.Context, s *couponmysql.Phones, user int64, p participant.Phone) error
	}{
		{"intent", func(ctx context.Context, s *couponmysql.Phones, user int64, p participant.Phone) error {
			return s.AddBindIntent(ctx, user, p)
		}},
		{"mark", func(ctx context.Context, s *couponmysql.Phones, user int64, p participant.Phone) error {
			return s.MarkBind(ctx, user, p)
		}},
		{"copy", func(ctx context.Context, s *couponmysql.Phones, user int64, p participant.Phone) error {
			_, err := s.CopyBound(ctx, user, p)
			return err
		}},
	}
	finishers := []struct {
		name   string
		finish func(t *testing.T, user int64, phone string, codes []string)
	}{
		{"BindPhone", func(t *testing.T, user int64, phone string, codes []string) {
			res, err := f.srv.Coupons.BindPhone(ctxT(t), &couponv1.BindPhoneRequest{UserId: user, Phone: phone})
			if err != nil {
				t.Fatalf("BindPhone: %v", err)
			}
			if got := codesOf(res.Coupons); !slices.Equal(got, codes) {
				t.Fatalf("BindPhone moved %v, want %v", got, codes)
			}
		}},
		{"ListUserCoupons", func(t *testing.T, user int64, _ string, _ []string) {
			f.userCoupons(t, user)
		}},
		{"GetCoupon", func(t *testing.T, user int64, _ string, codes []string) {
			c, err := f.srv.Coupons.GetCoupon(ctxT(t), &couponv1.GetCouponRequest{UserId: user, CouponCode: codes[0]})
			if err != nil || c.UserId != user {
				t.Fatalf("GetCoupon = %v, %v; want the moved coupon", c, err)
			}
		}},
	}
	user := int64(9000)
	for si, step := range steps {
		for fi, fin := range finishers {
			user++
			phone := fmt.Sprintf("1580000%02d%02d", si, fi)
			t.Run(step.name+"/"+fin.name, func(t *testing.T) {
				var claimed []*couponv1.Coupon
				for i := range 3 {
					claimed = append(claimed, f.claimByPhone(t, fmt.Sprintf("crash-%d-%d", user, i), phone, tpl.Id))
				}
				want := codesOf(claimed)
				p := mustPhone(t, phone)
				// The bind runs up to and including this step, then "crashes".
				for _, s := range steps[:si+1] {
					if err := s.run(ctxT(t), f.store().Phones, user, p); err != nil {
						t.Fatalf("step %s: %v", s.name, err)
					}
				}
				if step.name == "copy" {
					// Copied and still pending: the window between copy and delete.
					if err := steps[2].run(ctxT(t), f.store().Phones, user, p); err != nil {
						t.Fatalf("copy again: %v", err)
					}
					mid, _, err := f.store().Coupons.ListByUser(ctxT(t), user, participant.CouponFilter{}, participant.Page{Size: 10})
					if err != nil || len(mid) != 3 || f.pending(t, phone, tpl.Id) != 3 {
						t.Fatalf("after the crash: %d in the user's table (%v), %d pending; want 3 and 3", len(mid), err, f.pending(t, phone, tpl.Id))
					}
				}

				fin.finish(t, user, phone, want)

				got := f.userCoupons(t, user)
				if !slices.Equal(codesOf(got), want) {
					t.Fatalf("user's coupons %v, want %v", codesOf(got), want)
				}
				for _, c := range got {
					if c.UserId != user || c.Status != couponv1.Coupon_AVAILABLE {
						t.Fatalf("coupon %+v, want AVAILABLE for user %d", c, user)
					}
				}
				if n := f.pending(t, phone, tpl.Id); n != 0 {
					t.Fatalf("%d coupons still pending", n)
				}
				if ps, err := f.store().Phones.BindIntents(ctxT(t), user); err != nil || len(ps) != 0 {
					t.Fatalf("bind intents left: %v, %v", ps, err)
				}
				// Counted once for the user, however often the copy ran.
				if n, err := f.store().Coupons.Claimed(ctxT(t), user, tpl.Id); err != nil || n != 3 {
					t.Fatalf("claim count = %d, %v; want 3", n, err)
				}
				// A later bind finds nothing to do.
				res, err := f.srv.Coupons.BindPhone(ctxT(t), &couponv1.BindPhoneRequest{UserId: user, Phone: phone})
				if err != nil || len(res.Coupons) != 0 {
					t.Fatalf("BindPhone after finishing = %v, %v; want no coupons", res, err)
				}
			})
		}
	}
	if pending, users := f.issued(t, tpl.Id); pending != 0 || users != int64(3*len(steps)*len(finishers)) {
		t.Fatalf("issued pending %d, to users %d; want 0 and %d", pending, users, 3*len(steps)*len(finishers))
	}
}

func TestPhoneBadInputs(t *testing.T) {
	f := newFixture(t)
	tpl := f.template(t, 10, 0)
	tests := []struct {
		name string
		call func() error
	}{
		{"claim short phone", func() error {
			_, err := f.srv.Coupons.ClaimCouponByPhone(ctxT(t), &couponv1.ClaimCouponByPhoneRequest{RequestId: "x1", Phone: "12345", TemplateId: tpl.Id})
			return err
		}},
		{"claim landline", func() error {
			_, err := f.srv.Coupons.ClaimCouponByPhone(ctxT(t), &couponv1.ClaimCouponByPhoneRequest{RequestId: "x2", Phone: "+861012345678", TemplateId: tpl.Id})
			return err
		}},
		{"claim letters", func() error {
			_, err := f.srv.Coupons.ClaimCouponByPhone(ctxT(t), &couponv1.ClaimCouponByPhoneRequest{RequestId: "x3", Phone: "1380013800O", TemplateId: tpl.Id})
			return err
		}},
		{"claim no request id", func() error {
			_, err := f.srv.Coupons.ClaimCouponByPhone(ctxT(t), &couponv1.ClaimCouponByPhoneRequest{Phone: "13800138000", TemplateId: tpl.Id})
			return err
		}},
		{"claim no template", func() error {
			_, err := f.srv.Coupons.ClaimCouponByPhone(ctxT(t), &couponv1.ClaimCouponByPhoneRequest{RequestId: "x4", Phone: "13800138000"})
			return err
		}},
		{"bind empty phone", func() error {
			_, err := f.srv.Coupons.BindPhone(ctxT(t), &couponv1.BindPhoneRequest{UserId: 1, Phone: ""})
			return err
		}},
		{"bind no user", func() error {
			_, err := f.srv.Coupons.BindPhone(ctxT(t), &couponv1.BindPhoneRequest{Phone: "13800138000"})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantErr(t, tt.call(), codes.InvalidArgument, "INVALID_ARGUMENT")
		})
	}
	if pending, users := f.issued(t, tpl.Id); pending != 0 || users != 0 {
		t.Fatalf("bad inputs wrote coupons: pending %d, users %d", pending, users)
	}
	if owner, err := f.store().Phones.PhoneOwner(ctxT(t), mustPhone(t, "13800138000")); err != nil || owner != 0 {
		t.Fatalf("bad bind bound the phone to %d (%v)", owner, err)
	}
	if st := f.stats(t, tpl.Id); st.RemainingStock != 10 {
		t.Fatalf("remaining stock = %d, want 10", st.RemainingStock)
	}
}
