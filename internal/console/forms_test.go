package console

import (
	"errors"
	"net/http"
	"slices"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

func TestParseMoney(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"", 0, false},
		{"10", 1000, false},
		{"10.5", 1050, false},
		{"10.50", 1050, false},
		{"0.01", 1, false},
		{" 7.00 ", 700, false},
		{"10.505", 0, true},
		{"10.", 0, true},
		{".5", 0, true},
		{"-1", 0, true},
		{"1e3", 0, true},
		{"1,000", 0, true},
		{"99999999999999999", 0, true},
	}
	for _, tt := range tests {
		got, p := parseMoney("discount_amount", tt.in)
		if got != tt.want || (p != nil) != tt.wantErr {
			t.Errorf("parseMoney(%q) = %d, %v; want %d, error %v", tt.in, got, p, tt.want, tt.wantErr)
		}
	}
}

func TestMoney(t *testing.T) {
	for in, want := range map[int64]string{0: "0.00", 1: "0.01", 1050: "10.50", 100000: "1000.00", -5: "-0.05"} {
		if got := money(in); got != want {
			t.Errorf("money(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestTemplateRulesCheck(t *testing.T) {
	tests := []struct {
		name       string
		form       templateForm
		wantReason string
		wantField  string
	}{
		{"valid fixed", templateForm{CouponType: "FIXED_AMOUNT", Discount: "10", MinOrder: "50", UsageRule: "order.amount >= 5000"}, "", ""},
		{"valid percent", templateForm{CouponType: "PERCENT_OFF", PercentOff: "15", MaxDiscount: "20"}, "", ""},
		{"rule does not compile", templateForm{CouponType: "FIXED_AMOUNT", Discount: "10", UsageRule: "order.amount >="}, "INVALID_RULE", "usage_rule"},
		{"discount above min order", templateForm{CouponType: "FIXED_AMOUNT", Discount: "60", MinOrder: "50"}, "INVALID_ARGUMENT", "discount_amount"},
		{"percent out of range", templateForm{CouponType: "PERCENT_OFF", PercentOff: "150"}, "INVALID_ARGUMENT", "percent_off"},
		{"no type", templateForm{Discount: "10"}, "INVALID_ARGUMENT", "coupon_type"},
		{"malformed amount", templateForm{CouponType: "FIXED_AMOUNT", Discount: "ten"}, "INVALID_ARGUMENT", "discount_amount"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, p := tt.form.rules()
			if p == nil {
				p = r.check()
			}
			var gotReason, gotField string
			if p != nil {
				gotReason, gotField = p.Reason, p.Field
			}
			if gotReason != tt.wantReason || gotField != tt.wantField {
				t.Errorf("check = %q on %q, want %q on %q (%v)", gotReason, gotField, tt.wantReason, tt.wantField, p)
			}
		})
	}
}

func TestUpdateRequestSendsOnlyChangedMoneyFields(t *testing.T) {
	cur := &couponv1.CouponTemplate{Id: 9, CouponType: couponv1.CouponTemplate_FIXED_AMOUNT, DiscountAmount: 1000, MinOrderAmount: 5000, UsageRule: "order.amount > 0"}
	f := templateFormOf(cur)
	f.Name = "renamed"
	req, p := f.updateRequest(cur, "bob")
	if p != nil {
		t.Fatal(p)
	}
	if req.DiscountAmount != nil || req.MinOrderAmount != nil || req.UsageRule != nil || req.PercentOff != nil || req.MaxDiscount != nil || req.Returnable != nil {
		t.Errorf("a rename sends money fields: %v", req)
	}
	if req.GetName() != "renamed" || req.UpdatedBy != "bob" {
		t.Errorf("request = %v, want name renamed by bob", req)
	}
	f.Discount = "12.00"
	if req, _ = f.updateRequest(cur, "bob"); req.GetDiscountAmount() != 1200 || req.DiscountAmount == nil {
		t.Errorf("a changed discount is not sent: %v", req)
	}
}

func TestChanges(t *testing.T) {
	got := changes(`{"status":"ACTIVE","name":"a","stock":10}`, `{"status":"PAUSED","name":"a","stock":12,"note":"x"}`)
	want := []change{{"note", "—", "x"}, {"status", "ACTIVE", "PAUSED"}, {"stock", "10", "12"}}
	if !slices.Equal(got, want) {
		t.Errorf("changes = %v, want %v", got, want)
	}
	if got := changes("", `{"name":"a"}`); len(got) != 1 || got[0].Before != "—" {
		t.Errorf("a creation = %v, want every field new", got)
	}
}

func TestStatsChart(t *testing.T) {
	bars := statsChart(&couponv1.TemplateStats{Issued: 100, Available: 50, Used: 1, RemainingStock: 0})
	byLabel := map[string]bar{}
	for _, b := range bars {
		byLabel[b.Label] = b
	}
	if got := byLabel["issued"].H; got != 160 {
		t.Errorf("the largest bar is %d high, want the full 160", got)
	}
	if got := byLabel["available"].H; got != 80 {
		t.Errorf("half of the largest is %d high, want 80", got)
	}
	if got := byLabel["used"].H; got != 2 {
		t.Errorf("a small non-zero value is %d high, want the visible minimum 2", got)
	}
	if got := byLabel["remaining"].H; got != 0 {
		t.Errorf("zero is %d high, want 0", got)
	}
}

func TestDescribe(t *testing.T) {
	withInfo := func(c codes.Code, reason, field string) error {
		st, _ := status.New(c, "the service's message").WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: "coupon", Metadata: map[string]string{"field": field}})
		return st.Err()
	}
	tests := []struct {
		name       string
		err        error
		wantReason string
		wantHTTP   int
		wantWords  string
	}{
		{"maker-checker", withInfo(codes.FailedPrecondition, "APPROVER_IS_CREATOR", ""), "APPROVER_IS_CREATOR", http.StatusBadRequest, words["APPROVER_IS_CREATOR"]},
		{"no admin role", withInfo(codes.PermissionDenied, "PERMISSION_DENIED", ""), "PERMISSION_DENIED", http.StatusForbidden, words["PERMISSION_DENIED"]},
		{"not landed yet", status.Error(codes.Unimplemented, "method LookupCoupons not implemented"), "UNIMPLEMENTED", http.StatusNotImplemented, "This build of the service does not implement that call yet."},
		{"transport down", status.Error(codes.Unavailable, "connection refused"), "", http.StatusServiceUnavailable, words["UNAVAILABLE"]},
		{"not a status", errors.New("boom"), "", http.StatusInternalServerError, "The service refused: Unknown."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := describe(tt.err)
			if p.Reason != tt.wantReason || p.HTTP != tt.wantHTTP || p.Words != tt.wantWords {
				t.Errorf("describe = %+v, want reason %q, http %d, words %q", p, tt.wantReason, tt.wantHTTP, tt.wantWords)
			}
		})
	}
}
