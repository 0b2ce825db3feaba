package rpc_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/opencoupon/coupon/participant"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// TestNoExistenceOracle: every method that names a coupon by (user, code)
// answers another user's real code exactly as it answers a code that does
// not exist — same status, reason, metadata and message but for the code
// itself — so codes cannot be probed for existence. And a code carries 64
// random bits beside its ID: a thousand claims give a thousand distinct
// tags, each of whose bits varies, so a neighbour's code cannot be guessed
// from one's own.
func TestNoExistenceOracle(t *testing.T) {
	f := newFixture(t)
	const n = 1000
	tpl := f.template(t, n, 0)
	cs := claimMany(t, f.srv.Coupons, n, func(i int) *couponv1.ClaimCouponRequest {
		return &couponv1.ClaimCouponRequest{RequestId: fmt.Sprintf("oracle-%d", i), UserId: int64(5000 + i%50), TemplateId: tpl.Id}
	})

	t.Run("codes carry a 64-bit random tag", func(t *testing.T) {
		tags := map[uint64]string{}
		var ones [64]int
		for _, c := range cs {
			if len(c.Code) != 26 {
				t.Fatalf("code %q has %d characters, want 26 (13 of ID, 13 of tag)", c.Code, len(c.Code))
			}
			if id, ok := participant.CodeID(c.Code); !ok || id != c.Id {
				t.Fatalf("CodeID(%q) = %d, %v; want the coupon's ID %d", c.Code, id, ok, c.Id)
			}
			tag, ok := base32Tag(c.Code[13:])
			if !ok {
				t.Fatalf("tag of %q is not 64 bits of Crockford base32", c.Code)
			}
			if prev, dup := tags[tag]; dup {
				t.Fatalf("codes %s and %s share their tag", prev, c.Code)
			}
			tags[tag] = c.Code
			for b := range ones {
				ones[b] += int(tag >> b & 1)
			}
		}
		for b, k := range ones {
			// A random bit is set in about half of the tags; one that is
			// always or never set is not random (P < 2^-999 by chance).
			if k == 0 || k == n {
				t.Fatalf("bit %d of the tag is %d in all %d codes: not random", b, k/n, n)
			}
		}
	})

	victim := cs[0]
	prober := int64(4242) // holds no coupon
	names := map[string]string{
		"another user's code":        victim.Code,
		"a real ID with a wrong tag": victim.Code[:13] + flipTag(victim.Code[13:]),
		"a made-up code":             participant.CouponCode(1 << 40),
	}
	cl := f.srv.Coupons
	gid := 0
	branch := func(transType, op string) func(code string) error {
		return func(code string) error {
			gid++
			ctx := metadata.AppendToOutgoingContext(ctxT(t), "dtm-gid", fmt.Sprintf("probe-%d", gid), "dtm-trans_type", transType, "dtm-branch_id", "01", "dtm-op", op)
			req := branchReq(prober, code, fmt.Sprintf("o-probe-%d", gid))
			if transType == "saga" {
				_, err := cl.UseCoupon(ctx, req)
				return err
			}
			_, err := cl.LockCoupon(ctx, req)
			return err
		}
	}
	methods := []struct {
		name   string
		call   func(code string) error
		code   codes.Code
		reason string
	}{
		{"LockCoupon (Try)", branch("tcc", "try"), codes.Aborted, "COUPON_NOT_FOUND"},
		{"UseCoupon (Saga action)", branch("saga", "action"), codes.Aborted, "COUPON_NOT_FOUND"},
		{"ReturnCoupon", func(code string) error {
			gid++
			_, err := cl.ReturnCoupon(ctxT(t), &couponv1.ReturnCouponRequest{RequestId: fmt.Sprintf("ret-probe-%d", gid), UserId: prober, CouponCode: code, OrderNo: "o-probe", Reason: "refund"})
			return err
		}, codes.NotFound, "COUPON_NOT_FOUND"},
		{"GetCoupon", func(code string) error {
			_, err := cl.GetCoupon(ctxT(t), &couponv1.GetCouponRequest{UserId: prober, CouponCode: code})
			return err
		}, codes.NotFound, "COUPON_NOT_FOUND"},
	}
	for _, m := range methods {
		t.Run(m.name, func(t *testing.T) {
			answers := map[string]string{}
			for what, code := range names {
				err := m.call(code)
				got := answerShape(err, code)
				answers[got] += what + "; "
				if c, r := reasonOf(err); c != m.code || r != m.reason {
					t.Errorf("%s: %s %q (%v), want %s %q", what, c, r, err, m.code, m.reason)
				}
			}
			if len(answers) != 1 {
				t.Fatalf("answers differ by whether the coupon exists:\n%v", answers)
			}
		})
	}

	// The probes changed nothing of the victim's.
	got, err := f.srv.Coupons.GetCoupon(ctxT(t), &couponv1.GetCouponRequest{UserId: victim.UserId, CouponCode: victim.Code})
	if err != nil || got.Status != couponv1.Coupon_AVAILABLE {
		t.Fatalf("victim's coupon after the probes = %v, %v; want it AVAILABLE", got, err)
	}
}

// claimMany makes n claims, a few at a time so that a loaded test machine
// serves them all; a claim answered Unavailable is retried with its request
// ID, as a client would.
func claimMany(t *testing.T, cl couponv1.CouponServiceClient, n int, req func(i int) *couponv1.ClaimCouponRequest) []*couponv1.Coupon {
	t.Helper()
	out := make([]*couponv1.Coupon, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	next := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range next {
				deadline := time.Now().Add(time.Minute)
				for {
					out[i], errs[i] = cl.ClaimCoupon(ctxT(t), req(i))
					if status.Code(errs[i]) != codes.Unavailable || time.Now().After(deadline) {
						break
					}
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("claim %d: %v", i, err)
		}
	}
	return out
}

// answerShape renders what a client sees of err with the code it named
// replaced, so that answers about different codes compare equal when they
// tell nothing apart.
func answerShape(err error, code string) string {
	st := status.Convert(err)
	var meta []string
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			meta = append(meta, ei.Reason, ei.Domain, fmt.Sprint(ei.Metadata))
		}
	}
	return strings.ReplaceAll(fmt.Sprintf("%s|%s|%v", st.Code(), st.Message(), meta), code, "<code>")
}

// base32Tag decodes 13 Crockford base32 digits holding 64 bits.
func base32Tag(s string) (uint64, bool) {
	const digits = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	if len(s) != 13 || strings.IndexByte(digits, s[0]) > 15 {
		return 0, false
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		d := strings.IndexByte(digits, s[i])
		if d < 0 {
			return 0, false
		}
		v = v<<5 | uint64(d)
	}
	return v, true
}

// flipTag changes the last digit of a tag.
func flipTag(tag string) string {
	last := byte('0')
	if tag[len(tag)-1] == '0' {
		last = '1'
	}
	return tag[:len(tag)-1] + string(last)
}
