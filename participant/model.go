package participant

import (
	"strings"
	"time"

	"github.com/opencoupon/coupon/participant/shape"
)

// CampaignStatus values match coupon.v1.Campaign.Status.
type CampaignStatus int32

const (
	CampaignActive CampaignStatus = 1
	CampaignPaused CampaignStatus = 2
	CampaignEnded  CampaignStatus = 3
)

// Campaign groups templates under one marketing event.
type Campaign struct {
	ID          int64
	RequestID   string
	Name        string
	Description string
	Type        string
	Status      CampaignStatus
	StartTime   time.Time
	EndTime     time.Time
	CreatedBy   string
	ApprovedBy  string
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// Open reports whether claims may be made under the campaign at now.
func (c *Campaign) Open(now time.Time) bool {
	return c.Status == CampaignActive && !now.Before(c.StartTime) && now.Before(c.EndTime)
}

// CouponType values match coupon.v1.CouponTemplate.CouponType.
type CouponType int32

const (
	FixedAmount CouponType = 1
	PercentOff  CouponType = 2
)

// TemplateStatus values match coupon.v1.CouponTemplate.Status.
type TemplateStatus int32

const (
	TemplatePendingApproval TemplateStatus = 1
	TemplateActive          TemplateStatus = 2
	TemplatePaused          TemplateStatus = 3
	TemplateEnded           TemplateStatus = 4
)

// Template is a batch of coupons with shared rules and stock.
type Template struct {
	ID             int64
	RequestID      string
	CampaignID     int64
	Name           string
	Description    string
	Logo           string
	Type           CouponType
	DiscountAmount int64
	PercentOff     int32
	MaxDiscount    int64
	MinOrderAmount int64
	ProductLines   []string
	UsageRule      string
	// Returnable: coupons used by an order come back when it is refunded.
	Returnable          bool
	TotalStock          int64
	PerUserLimit        int32
	DailyUseLimit       int32
	ValidFrom           time.Time
	ValidUntil          time.Time
	ValidDaysAfterClaim int32
	Status              TemplateStatus
	CreatedBy           string
	ApprovedBy          string
	// MoneyEditedBy is who last changed the template's money rules after
	// its creation (see MoneyRuleChanges); empty while nobody has. Like the
	// creator, they may not approve it.
	MoneyEditedBy string
	SubStockCount int32
	// Version grows with every change; caches and compiled rules key on it.
	Version   int64
	CreatedAt time.Time
	UpdatedAt time.Time
}

// ExpireAt is when a coupon of this template claimed at claimedAt expires.
func (t *Template) ExpireAt(claimedAt time.Time) time.Time {
	if t.ValidDaysAfterClaim > 0 {
		e := claimedAt.Add(time.Duration(t.ValidDaysAfterClaim) * 24 * time.Hour)
		if e.Before(t.ValidUntil) {
			return e
		}
	}
	return t.ValidUntil
}

// Eligible is the part of order o that a coupon of this template applies
// to. A template with no product lines applies to the whole amount. One
// limited to product lines applies to the sum of the order's lines in those
// lines or, for an order without lines, to its whole amount when the
// order's own product line is covered; otherwise to nothing. The lines of
// an accepted order never add up to more than its amount (shape.CheckOrder).
func (t *Template) Eligible(o Order) int64 {
	if len(t.ProductLines) == 0 {
		return o.Amount
	}
	if len(o.Items) == 0 {
		if t.CoversProductLine(o.ProductLine) {
			return o.Amount
		}
		return 0
	}
	var sum int64
	for _, it := range o.Items {
		if t.CoversProductLine(it.ProductLine) {
			sum += it.Amount
		}
	}
	return min(sum, o.Amount)
}

// Discount is what the template takes off an eligible amount: never more
// than it and never negative. A percentage is rounded down to the minor
// unit, then capped by MaxDiscount when that is set.
func (t *Template) Discount(eligible int64) int64 {
	if eligible <= 0 {
		return 0
	}
	var d int64
	switch t.Type {
	case FixedAmount:
		d = t.DiscountAmount
	case PercentOff:
		// ⌊eligible × p / 100⌋ without the product, which overflows int64
		// for amounts above 9.2×10^16: eligible = 100q + r.
		p := int64(t.PercentOff)
		d = eligible/100*p + eligible%100*p/100
		if t.MaxDiscount > 0 && d > t.MaxDiscount {
			d = t.MaxDiscount
		}
	}
	return min(max(d, 0), eligible)
}

// CoversProductLine reports whether the template applies to product line pl.
func (t *Template) CoversProductLine(pl string) bool {
	if len(t.ProductLines) == 0 {
		return true
	}
	for _, l := range t.ProductLines {
		if strings.EqualFold(l, pl) {
			return true
		}
	}
	return false
}

// CouponStatus values match coupon.v1.Coupon.Status.
type CouponStatus int32

const (
	CouponAvailable CouponStatus = 1
	CouponLocked    CouponStatus = 2
	CouponUsed      CouponStatus = 3
	CouponExpired   CouponStatus = 4
)

func (s CouponStatus) String() string {
	switch s {
	case CouponAvailable:
		return "AVAILABLE"
	case CouponLocked:
		return "LOCKED"
	case CouponUsed:
		return "USED"
	case CouponExpired:
		return "EXPIRED"
	}
	return "UNKNOWN"
}

// Coupon is one claimed coupon.
type Coupon struct {
	ID             int64
	Code           string
	TemplateID     int64
	CampaignID     int64
	UserID         int64
	RequestID      string
	Status         CouponStatus
	ClaimedAt      time.Time
	ExpireAt       time.Time
	OrderNo        string
	DiscountAmount int64
	UsedAt         time.Time
	// LockGID and LockBranch name the DTM transaction and branch that
	// hold the coupon while LOCKED, and that used it once USED.
	LockGID    string
	LockBranch string
	LockedAt   time.Time
	// EventSeq is the sequence number of the coupon's latest lifecycle
	// event (1: claimed); see events.go.
	EventSeq int64
	// Phone is set on a coupon claimed by a phone number not yet bound to
	// a user (UserID 0); it formats masked.
	Phone Phone
}

// EffectiveStatus is the status a reader sees at now: an AVAILABLE coupon
// past its expiry is EXPIRED even before the sweeper has written it.
func (c *Coupon) EffectiveStatus(now time.Time) CouponStatus {
	if c.Status == CouponAvailable && !now.Before(c.ExpireAt) {
		return CouponExpired
	}
	return c.Status
}

// Item is one line of an order.
type Item = shape.Item

// Order is what a coupon is applied to.
type Order = shape.Order

// TemplateStats counts a template's coupons by effective status.
type TemplateStats struct {
	TemplateID     int64
	TotalStock     int64
	RemainingStock int64
	Issued         int64
	Available      int64
	Locked         int64
	Used           int64
	Expired        int64
}
