package console

import (
	"context"
	"encoding/json"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opencoupon/coupon/participant"
	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// review is what an approver sees before approving: the money rules that
// differ from the ones the creator submitted, and who changed them last.
type review struct {
	// Found is false when the audit log holds no creation row for the
	// template, so what changed cannot be told.
	Found         bool
	CreatedBy     string
	MoneyEditedBy string
	Changes       []ruleChange
}

type ruleChange struct {
	Field, Created, Now string
}

// moneyFields are the rules whose values are amounts in minor units.
var moneyFields = map[string]bool{"discount_amount": true, "max_discount": true, "min_order_amount": true}

// reviewOf compares tpl with the template as created, read from the
// creation row of its audit log (the one with no before), using the
// service's own definition of the money rules.
func (c *Console) reviewOf(ctx context.Context, tpl *couponv1.CouponTemplate) (*review, error) {
	rv := &review{CreatedBy: tpl.CreatedBy, MoneyEditedBy: tpl.MoneyEditedBy}
	var created *participant.Template
	req := &couponv1.ListAuditLogRequest{EntityType: participant.EntityTemplate, EntityId: tpl.Id, PageSize: 500}
	for {
		res, err := c.d.Admin.ListAuditLog(ctx, req)
		if err != nil {
			return nil, err
		}
		for _, e := range res.Entries {
			if e.BeforeJson == "" {
				created = &participant.Template{}
				if err := json.Unmarshal([]byte(e.AfterJson), created); err != nil {
					return nil, err
				}
			}
		}
		if created != nil || res.NextPageToken == "" {
			break
		}
		req.PageToken = res.NextPageToken
	}
	if created == nil {
		return rv, nil
	}
	rv.Found = true
	for _, ch := range participant.MoneyRuleChanges(created, moneyRulesOf(tpl)) {
		rc := ruleChange{Field: ch.Field, Created: ch.Before, Now: ch.After}
		if moneyFields[ch.Field] {
			rc.Created, rc.Now = minorToMoney(ch.Before), minorToMoney(ch.After)
		}
		rv.Changes = append(rv.Changes, rc)
	}
	return rv, nil
}

func minorToMoney(s string) string {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return s
	}
	return money(n)
}

// moneyRulesOf is the part of tpl that MoneyRuleChanges compares.
func moneyRulesOf(t *couponv1.CouponTemplate) *participant.Template {
	return &participant.Template{
		Type: participant.CouponType(t.CouponType), DiscountAmount: t.DiscountAmount, PercentOff: t.PercentOff,
		MaxDiscount: t.MaxDiscount, MinOrderAmount: t.MinOrderAmount, ProductLines: t.ProductLines,
		UsageRule: t.UsageRule, Returnable: t.Returnable, PerUserLimit: t.PerUserLimit, DailyUseLimit: t.DailyUseLimit,
		ValidFrom: timeOf(t.ValidFrom), ValidUntil: timeOf(t.ValidUntil),
		ValidDaysAfterClaim: t.ValidDaysAfterClaim,
	}
}

func timeOf(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime().UTC()
}
