package console

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opencoupon/coupon/participant"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// Forms take money in major units with at most two decimals ("10.50") and
// send exact int64 minor units (1050); times are UTC.
const timeLayout = "2006-01-02T15:04"

func parseMoney(field, s string) (int64, *problem) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	whole, frac, dot := strings.Cut(s, ".")
	if whole == "" || len(frac) > 2 || (dot && frac == "") || !digits(whole) || !digits(frac) || len(whole) > 16 {
		return 0, invalid(field, "must be an amount like 10 or 10.50 (at most two decimals, no sign)")
	}
	for len(frac) < 2 {
		frac += "0"
	}
	n, err := strconv.ParseInt(whole+frac, 10, 64)
	if err != nil || n > participant.MaxOrderAmount {
		return 0, invalid(field, "is too large")
	}
	return n, nil
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// money formats minor units as major units with two decimals.
func money(n int64) string {
	neg := n < 0
	if neg {
		n = -n
	}
	s := strconv.FormatInt(n/100, 10) + "." + strconv.FormatInt(100+n%100, 10)[1:]
	if neg {
		return "-" + s
	}
	return s
}

func parseInt(field, s string, bits int) (int64, *problem) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, bits)
	if err != nil {
		return 0, invalid(field, "must be a whole number")
	}
	return n, nil
}

func parseTime(field, s string) (*timestamppb.Timestamp, *problem) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	t, err := time.ParseInLocation(timeLayout, s, time.UTC)
	if err != nil {
		return nil, invalid(field, "must be a date and time like 2027-01-31T18:00 (UTC)")
	}
	return timestamppb.New(t), nil
}

func formTime(ts *timestamppb.Timestamp) string {
	if ts == nil || !ts.IsValid() || (ts.Seconds == 0 && ts.Nanos == 0) {
		return ""
	}
	return ts.AsTime().UTC().Format(timeLayout)
}

// campaignForm is a campaign form as typed, kept to show it again.
type campaignForm struct {
	RequestID, Name, Description, Type, Start, End string
}

func readCampaignForm(r *http.Request) campaignForm {
	return campaignForm{
		RequestID: r.PostFormValue("request_id"), Name: r.PostFormValue("name"),
		Description: r.PostFormValue("description"), Type: r.PostFormValue("campaign_type"),
		Start: r.PostFormValue("start_time"), End: r.PostFormValue("end_time"),
	}
}

func campaignFormOf(c *couponv1.Campaign) campaignForm {
	return campaignForm{Name: c.Name, Description: c.Description, Type: c.CampaignType, Start: formTime(c.StartTime), End: formTime(c.EndTime)}
}

func (f campaignForm) times() (start, end *timestamppb.Timestamp, p *problem) {
	if start, p = parseTime("start_time", f.Start); p != nil {
		return nil, nil, p
	}
	if end, p = parseTime("end_time", f.End); p != nil {
		return nil, nil, p
	}
	return start, end, nil
}

// templateForm is a template form as typed.
type templateForm struct {
	RequestID, Name, Description, Logo, CouponType                 string
	Discount, PercentOff, MaxDiscount, MinOrder                    string
	ProductLines, UsageRule                                        string
	TotalStock, PerUserLimit, DailyUseLimit, ValidFrom, ValidUntil string
	ValidDays                                                      string
	Returnable                                                     bool
}

func readTemplateForm(r *http.Request) templateForm {
	v := r.PostFormValue
	return templateForm{
		RequestID: v("request_id"), Name: v("name"), Description: v("description"), Logo: v("logo"),
		CouponType: v("coupon_type"), Discount: v("discount_amount"), PercentOff: v("percent_off"),
		MaxDiscount: v("max_discount"), MinOrder: v("min_order_amount"), ProductLines: v("product_lines"),
		UsageRule: v("usage_rule"), TotalStock: v("total_stock"), PerUserLimit: v("per_user_limit"),
		DailyUseLimit: v("daily_use_limit"), ValidFrom: v("valid_from"), ValidUntil: v("valid_until"),
		ValidDays: v("valid_days_after_claim"), Returnable: v("returnable") != "",
	}
}

func templateFormOf(t *couponv1.CouponTemplate) templateForm {
	itoa := func(n int64) string { return strconv.FormatInt(n, 10) }
	f := templateForm{
		Name: t.Name, Description: t.Description, Logo: t.Logo, CouponType: t.CouponType.String(),
		PercentOff: itoa(int64(t.PercentOff)), ProductLines: strings.Join(t.ProductLines, ", "),
		UsageRule: t.UsageRule, TotalStock: itoa(t.TotalStock), PerUserLimit: itoa(int64(t.PerUserLimit)),
		DailyUseLimit: itoa(int64(t.DailyUseLimit)), ValidFrom: formTime(t.ValidFrom), ValidUntil: formTime(t.ValidUntil),
		ValidDays: itoa(int64(t.ValidDaysAfterClaim)), Returnable: t.Returnable,
	}
	if t.DiscountAmount != 0 {
		f.Discount = money(t.DiscountAmount)
	}
	if t.MaxDiscount != 0 {
		f.MaxDiscount = money(t.MaxDiscount)
	}
	if t.MinOrderAmount != 0 {
		f.MinOrder = money(t.MinOrderAmount)
	}
	return f
}

// templateRules are a form's money fields and usage rule, parsed.
type templateRules struct {
	Type                            couponv1.CouponTemplate_CouponType
	Discount, MaxDiscount, MinOrder int64
	PercentOff                      int32
	ProductLines                    []string
	UsageRule                       string
}

func (f templateForm) rules() (templateRules, *problem) {
	var r templateRules
	var p *problem
	r.Type = couponv1.CouponTemplate_CouponType(couponv1.CouponTemplate_CouponType_value[f.CouponType])
	if r.Discount, p = parseMoney("discount_amount", f.Discount); p != nil {
		return r, p
	}
	if r.MaxDiscount, p = parseMoney("max_discount", f.MaxDiscount); p != nil {
		return r, p
	}
	if r.MinOrder, p = parseMoney("min_order_amount", f.MinOrder); p != nil {
		return r, p
	}
	pct, p := parseInt("percent_off", f.PercentOff, 32)
	if p != nil {
		return r, p
	}
	r.PercentOff = int32(pct)
	for _, pl := range strings.Split(f.ProductLines, ",") {
		if pl = strings.TrimSpace(pl); pl != "" {
			r.ProductLines = append(r.ProductLines, pl)
		}
	}
	r.UsageRule = f.UsageRule
	return r, nil
}

// check validates the money fields and the usage rule exactly as the
// service will (participant's own validation and rule compiler), for the
// live check while the operator types.
func (r templateRules) check() *problem {
	t := participant.Template{
		Type: participant.CouponType(r.Type), DiscountAmount: r.Discount, PercentOff: r.PercentOff,
		MaxDiscount: r.MaxDiscount, MinOrderAmount: r.MinOrder, ProductLines: r.ProductLines, UsageRule: r.UsageRule,
	}
	if err := t.CheckRules(); err != nil {
		p := &problem{Reason: participant.ErrorReason(err), Message: err.Error(), HTTP: http.StatusBadRequest}
		var e *participant.Error
		if errors.As(err, &e) {
			p.Field = e.Metadata["field"]
		}
		p.Words = words[p.Reason]
		return p
	}
	return nil
}

func (f templateForm) createRequest(campaignID int64, identity string) (*couponv1.CreateTemplateRequest, *problem) {
	r, p := f.rules()
	if p != nil {
		return nil, p
	}
	req := &couponv1.CreateTemplateRequest{
		RequestId: strings.TrimSpace(f.RequestID), CampaignId: campaignID, Name: f.Name, Description: f.Description, Logo: f.Logo,
		CouponType: r.Type, DiscountAmount: r.Discount, PercentOff: r.PercentOff, MaxDiscount: r.MaxDiscount,
		MinOrderAmount: r.MinOrder, ProductLines: r.ProductLines, UsageRule: r.UsageRule, CreatedBy: identity,
		Returnable: &f.Returnable,
	}
	var n int64
	if n, p = parseInt("total_stock", f.TotalStock, 64); p != nil {
		return nil, p
	}
	req.TotalStock = n
	if n, p = parseInt("per_user_limit", f.PerUserLimit, 32); p != nil {
		return nil, p
	}
	req.PerUserLimit = int32(n)
	if n, p = parseInt("daily_use_limit", f.DailyUseLimit, 32); p != nil {
		return nil, p
	}
	req.DailyUseLimit = int32(n)
	if n, p = parseInt("valid_days_after_claim", f.ValidDays, 32); p != nil {
		return nil, p
	}
	req.ValidDaysAfterClaim = int32(n)
	if req.ValidFrom, p = parseTime("valid_from", f.ValidFrom); p != nil {
		return nil, p
	}
	if req.ValidUntil, p = parseTime("valid_until", f.ValidUntil); p != nil {
		return nil, p
	}
	return req, nil
}

// updateRequest sends what changed from cur: presentation fields, limits
// and the end of validity always; money fields only when they differ, so
// renaming an approved template is not refused as a money change.
func (f templateForm) updateRequest(cur *couponv1.CouponTemplate, identity string) (*couponv1.UpdateTemplateRequest, *problem) {
	r, p := f.rules()
	if p != nil {
		return nil, p
	}
	req := &couponv1.UpdateTemplateRequest{
		TemplateId: cur.Id, Name: &f.Name, Description: &f.Description, Logo: &f.Logo, UpdatedBy: identity,
	}
	lim, p := parseInt("per_user_limit", f.PerUserLimit, 32)
	if p != nil {
		return nil, p
	}
	daily, p := parseInt("daily_use_limit", f.DailyUseLimit, 32)
	if p != nil {
		return nil, p
	}
	pl, dl := int32(lim), int32(daily)
	req.PerUserLimit, req.DailyUseLimit = &pl, &dl
	if req.ValidUntil, p = parseTime("valid_until", f.ValidUntil); p != nil {
		return nil, p
	}
	if r.UsageRule != cur.UsageRule {
		req.UsageRule = &r.UsageRule
	}
	if r.Discount != cur.DiscountAmount {
		req.DiscountAmount = &r.Discount
	}
	if r.PercentOff != cur.PercentOff {
		req.PercentOff = &r.PercentOff
	}
	if r.MaxDiscount != cur.MaxDiscount {
		req.MaxDiscount = &r.MaxDiscount
	}
	if r.MinOrder != cur.MinOrderAmount {
		req.MinOrderAmount = &r.MinOrder
	}
	if f.Returnable != cur.Returnable {
		req.Returnable = &f.Returnable
	}
	return req, nil
}
