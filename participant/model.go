package participant

import (
	"strings"
	"time"
)

// CampaignStatus values match coupon.v1.Campaign.Status.
type CampaignStatus int8

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
type CouponType int8

const (
	FixedAmount CouponType = 1
	PercentOff  CouponType = 2
)

// TemplateStatus values match coupon.v1.CouponTemplate.Status.
type TemplateStatus int8

const (
	TemplatePendingApproval TemplateStatus = 1
	TemplateActive          TemplateStatus = 2
	TemplatePaused          TemplateStatus = 3
	TemplateEnded           TemplateStatus = 4
)

// Template is a batch of coupons with shared rules and stock.
type Template struct {
	ID                  int64
	RequestID           string
	CampaignID          int64
	Name                string
	Description         string
	Logo                string
	Type                CouponType
	DiscountAmount      int64
	PercentOff          int32
	MaxDiscount         int64
	MinOrderAmount      int64
	ProductLines        []string
	UsageRule           string
	TotalStock          int64
	PerUserLimit        int32
	DailyUseLimit       int32
	ValidFrom           time.Time
	ValidUntil          time.Time
	ValidDaysAfterClaim int32
	Status              TemplateStatus
	CreatedBy           string
	ApprovedBy          string
	SubStockCount       int32
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

// Discount is what the template takes off an order of amount, never more
// than amount and never negative.
func (t *Template) Discount(amount int64) int64 {
	if amount <= 0 {
		return 0
	}
	var d int64
	switch t.Type {
	case FixedAmount:
		d = t.DiscountAmount
	case PercentOff:
		// amount is bounded by MaxOrderAmount, so this cannot overflow.
		d = amount * int64(t.PercentOff) / 100
		if t.MaxDiscount > 0 && d > t.MaxDiscount {
			d = t.MaxDiscount
		}
	}
	return min(max(d, 0), amount)
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
type CouponStatus int8

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
type Item struct {
	SKU         string
	ProductLine string
	Quantity    int64
	Amount      int64
}

// Order is what a coupon is applied to.
type Order struct {
	OrderNo     string
	UserID      int64
	Amount      int64
	Currency    string
	ProductLine string
	Items       []Item
}

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
