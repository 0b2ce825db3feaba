package participant

import (
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/opencoupon/coupon/participant/rules"
	"github.com/opencoupon/coupon/participant/shape"
)

// Every check of the service's input, in one place. A failed check is an
// EINVALID error naming the field; nothing is written for it.

// Limits on what the service accepts; order bounds are in package shape.
const (
	MaxStock          = 1_000_000_000_000 // units in one template
	MaxOrderAmount    = shape.MaxAmount
	maxValidDays      = 3650
	maxProductLines   = 64
	maxNameLen        = 255
	maxTextLen        = 1024
	maxPrincipalLen   = 128
	maxCampaignType   = 64
	maxProductLineLen = shape.MaxProductLineLen
)

// checkText checks single-line operator text (names, codes, types,
// principals, reasons): no control characters at all, no bidirectional
// controls. It is shown in the console, in logs and in audit rows, where a
// NUL or a right-to-left override makes it read as something else.
func checkText(field, v string, required bool, maxLen int) error {
	return checkString(field, v, required, maxLen, false)
}

// checkLongText checks multi-line operator text (descriptions): as
// checkText, except that line breaks and tabs are kept.
func checkLongText(field, v string, required bool, maxLen int) error {
	return checkString(field, v, required, maxLen, true)
}

// checkBranchText checks free text a branch carries from the caller's
// systems (a return's reason): length and UTF-8 only. It is not operator
// text, and ReturnCoupon is a DTM message branch, which must not start
// refusing for ever text it used to take: the coupon would never return.
func checkBranchText(field, v string, maxLen int) error {
	if len(v) > maxLen {
		return Invalid(field, "is longer than %d bytes", maxLen)
	}
	if !utf8.ValidString(v) {
		return Invalid(field, "is not valid UTF-8")
	}
	return nil
}

func checkString(field, v string, required bool, maxLen int, multiline bool) error {
	if required && strings.TrimSpace(v) == "" {
		return Invalid(field, "is required")
	}
	if len(v) > maxLen {
		return Invalid(field, "is longer than %d bytes", maxLen)
	}
	if !utf8.ValidString(v) {
		return Invalid(field, "is not valid UTF-8")
	}
	for i, r := range v {
		if multiline && (r == '\n' || r == '\r' || r == '\t') {
			continue
		}
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return Invalid(field, "has a control character (%U at byte %d)", r, i)
		}
		if bidiControl(r) {
			return Invalid(field, "has a bidirectional control character (%U at byte %d)", r, i)
		}
	}
	return nil
}

// bidiControl reports the explicit bidirectional embeddings, overrides and
// isolates (Unicode's "Trojan Source" characters), which reorder the text
// that follows them on screen. The implicit marks (U+200E, U+200F, U+061C)
// are allowed: they only affect neutral characters next to them.
func bidiControl(r rune) bool {
	return (r >= '\u202A' && r <= '\u202E') || (r >= '\u2066' && r <= '\u2069')
}

// checkLogo checks a template's logo: empty, or an absolute http: or https:
// URL with a host. Anything else (javascript:, data:, a relative path)
// would be dangerous or meaningless in a client's <img src>.
func checkLogo(field, v string) error {
	if v == "" {
		return nil
	}
	if err := checkText(field, v, false, maxTextLen); err != nil {
		return err
	}
	u, err := url.Parse(v)
	if err != nil {
		return Invalid(field, "is not a URL")
	}
	if scheme := strings.ToLower(u.Scheme); scheme != "https" && scheme != "http" {
		return Invalid(field, "must be an absolute https: or http: URL")
	}
	if u.Host == "" || u.Opaque != "" || strings.ContainsAny(v, " \\") {
		return Invalid(field, "must be an absolute https: or http: URL with a host")
	}
	return nil
}

// LogoURL returns logo if it is one checkLogo accepts, and "" otherwise:
// rows stored before the check may hold anything, and the console shows
// only what a new row could hold.
func LogoURL(logo string) string {
	if logo == "" || checkLogo("logo", logo) != nil {
		return ""
	}
	return logo
}

// CheckRequestID validates an idempotency key: 1 to 64 printable ASCII bytes.
func CheckRequestID(field, v string) error { return fieldError(shape.Key(field, v)) }

// fieldError turns a shape check's answer into an EINVALID error.
func fieldError(fe *shape.FieldError) error {
	if fe == nil {
		return nil
	}
	return Invalid(fe.Field, "%s", fe.Message)
}

// ValidCode reports whether s has the shape of a coupon code.
func ValidCode(s string) bool { return shape.Code(s) }

func checkOrder(userID int64, o Order) error { return fieldError(shape.CheckOrder(userID, o)) }

func checkID(field string, id int64) error {
	if id <= 0 {
		return Invalid(field, "must be a positive id, got %d", id)
	}
	return nil
}

// kept reports whether an update leaves a text field as the stored row has
// it (stored is nil when creating). Such a field is not checked again, so a
// row stored before a check existed can still be paused, ended or fixed; a
// field is held to today's checks whenever it is written.
func kept(stored bool, old, v string) bool { return stored && old == v }

func (c *Campaign) validate(stored *Campaign) error {
	var was Campaign
	if stored != nil {
		was = *stored
	}
	if c.RequestID != "" {
		if err := CheckRequestID("request_id", c.RequestID); err != nil {
			return err
		}
	}
	for _, f := range []struct {
		name, v, old string
		required     bool
		max          int
	}{
		{"name", c.Name, was.Name, true, maxNameLen},
		{"campaign_type", c.Type, was.Type, false, maxCampaignType},
		{"created_by", c.CreatedBy, was.CreatedBy, true, maxPrincipalLen},
	} {
		if kept(stored != nil, f.old, f.v) {
			continue
		}
		if err := checkText(f.name, f.v, f.required, f.max); err != nil {
			return err
		}
	}
	if !kept(stored != nil, was.Description, c.Description) {
		if err := checkLongText("description", c.Description, false, maxTextLen); err != nil {
			return err
		}
	}
	if c.StartTime.IsZero() {
		return Invalid("start_time", "is required")
	}
	if c.EndTime.IsZero() {
		return Invalid("end_time", "is required")
	}
	if !c.StartTime.Before(c.EndTime) {
		return Invalid("end_time", "must be after start_time")
	}
	return nil
}

func checkPage(p Page) (Page, error) {
	if p.Size < 0 {
		return p, Invalid("page_size", "must not be negative")
	}
	if p.Size == 0 {
		p.Size = 50
	}
	if p.Size > 500 {
		p.Size = 500
	}
	if len(p.After) > 256 {
		return p, Invalid("page_token", "is malformed")
	}
	return p, nil
}

// CheckRules validates t's money rules and usage rule as CreateTemplate
// does, storing nothing: the console checks a draft with it as the operator
// types.
func (t *Template) CheckRules() error { return t.validateRules(nil) }

// validateRules checks the money rules of a template; stored is the row an
// update starts from, nil when creating.
func (t *Template) validateRules(stored *Template) error {
	switch t.Type {
	case FixedAmount:
		if t.DiscountAmount <= 0 {
			return Invalid("discount_amount", "must be > 0 for FIXED_AMOUNT")
		}
		if t.PercentOff != 0 {
			return Invalid("percent_off", "must be 0 for FIXED_AMOUNT")
		}
		if t.MinOrderAmount > 0 && t.DiscountAmount > t.MinOrderAmount {
			return Invalid("discount_amount", "must not exceed min_order_amount (%d)", t.MinOrderAmount)
		}
	case PercentOff:
		if t.PercentOff < 1 || t.PercentOff > 100 {
			return Invalid("percent_off", "must be in 1..100, got %d", t.PercentOff)
		}
		if t.DiscountAmount != 0 {
			return Invalid("discount_amount", "must be 0 for PERCENT_OFF (use max_discount for a cap)")
		}
		if t.MaxDiscount < 0 {
			return Invalid("max_discount", "must not be negative")
		}
	default:
		return Invalid("coupon_type", "must be FIXED_AMOUNT or PERCENT_OFF")
	}
	if t.DiscountAmount > MaxOrderAmount || t.MaxDiscount > MaxOrderAmount {
		return Invalid("discount_amount", "is too large")
	}
	if t.MinOrderAmount < 0 || t.MinOrderAmount > MaxOrderAmount {
		return Invalid("min_order_amount", "must be in 0..%d", int64(MaxOrderAmount))
	}
	if len(t.ProductLines) > maxProductLines {
		return Invalid("product_lines", "has more than %d entries", maxProductLines)
	}
	for i, pl := range t.ProductLines {
		if stored != nil && i < len(stored.ProductLines) && kept(true, stored.ProductLines[i], pl) {
			continue
		}
		if err := checkText("product_lines", pl, true, maxProductLineLen); err != nil {
			return err
		}
	}
	if _, err := rules.Compile(t.UsageRule); err != nil {
		e := Invalid("usage_rule", "%v", err)
		e.Reason = ReasonInvalidRule
		return e
	}
	return nil
}

func (t *Template) validate(maxSub int32, stored *Template) error {
	var was Template
	if stored != nil {
		was = *stored
	}
	if t.RequestID != "" {
		if err := CheckRequestID("request_id", t.RequestID); err != nil {
			return err
		}
	}
	if err := checkID("campaign_id", t.CampaignID); err != nil {
		return err
	}
	for _, f := range []struct {
		name, v, old string
		required     bool
		max          int
	}{
		{"name", t.Name, was.Name, true, maxNameLen},
		{"created_by", t.CreatedBy, was.CreatedBy, true, maxPrincipalLen},
	} {
		if kept(stored != nil, f.old, f.v) {
			continue
		}
		if err := checkText(f.name, f.v, f.required, f.max); err != nil {
			return err
		}
	}
	if !kept(stored != nil, was.Description, t.Description) {
		if err := checkLongText("description", t.Description, false, maxTextLen); err != nil {
			return err
		}
	}
	if !kept(stored != nil, was.Logo, t.Logo) {
		if err := checkLogo("logo", t.Logo); err != nil {
			return err
		}
	}
	if err := t.validateRules(stored); err != nil {
		return err
	}
	if t.TotalStock < 0 || t.TotalStock > MaxStock {
		return Invalid("total_stock", "must be in 0..%d, got %d", int64(MaxStock), t.TotalStock)
	}
	if t.PerUserLimit < 0 {
		return Invalid("per_user_limit", "must not be negative (0 means no limit)")
	}
	if t.DailyUseLimit < 0 {
		return Invalid("daily_use_limit", "must not be negative (0 means no limit)")
	}
	if t.ValidFrom.IsZero() {
		return Invalid("valid_from", "is required")
	}
	if t.ValidUntil.IsZero() {
		return Invalid("valid_until", "is required")
	}
	if !t.ValidFrom.Before(t.ValidUntil) {
		return Invalid("valid_until", "must be after valid_from")
	}
	if t.ValidDaysAfterClaim < 0 || t.ValidDaysAfterClaim > maxValidDays {
		return Invalid("valid_days_after_claim", "must be in 0..%d", maxValidDays)
	}
	if t.SubStockCount < 0 || t.SubStockCount > maxSub {
		return Invalid("sub_stock_count", "must be in 0..%d", maxSub)
	}
	return nil
}

func (r ClaimRequest) validate() error {
	if err := CheckRequestID("request_id", r.RequestID); err != nil {
		return err
	}
	if err := checkID("user_id", r.UserID); err != nil {
		return err
	}
	return checkID("template_id", r.TemplateID)
}

// validate checks a claim by phone and returns the normalised phone.
func (r PhoneClaimRequest) validate() (Phone, error) {
	if err := CheckRequestID("request_id", r.RequestID); err != nil {
		return "", err
	}
	p, err := ParsePhone(r.Phone)
	if err != nil {
		return "", err
	}
	if err := checkID("template_id", r.TemplateID); err != nil {
		return "", err
	}
	return p, nil
}

// checkEnum refuses a status filter or change outside the enum's values;
// 0 means "any" or "no change" and passes.
func checkEnum[T ~int32](field string, v, lo, hi T) error {
	if v != 0 && (v < lo || v > hi) {
		return Invalid(field, "unknown value %d", v)
	}
	return nil
}

// maxGIDLen bounds gids and branch IDs (the barrier and coupon columns).
const maxGIDLen = 128

// validate refuses calls without barrier metadata: they did not come
// through DTM, and without a gid there is no lock holder to check.
func (br Branch) validate() error {
	if br.GID == "" || br.BranchID == "" || br.Op == "" {
		return Errorf(EINVALID, ReasonMissingBarrier, "DTM branch metadata (gid, branch_id, op) is required")
	}
	return nil
}

// fits reports whether the gid and branch ID fit their columns; a Try that
// does not fit is refused, so no lock can exist for such a transaction.
func (br Branch) fits() error {
	if len(br.GID) > maxGIDLen {
		return Invalid("dtm-gid", "is longer than %d bytes", maxGIDLen)
	}
	if len(br.BranchID) > maxGIDLen {
		return Invalid("dtm-branch_id", "is longer than %d bytes", maxGIDLen)
	}
	return nil
}

// validate checks a Try's payload.
func (r BranchRequest) validate() error {
	if err := checkID("user_id", r.UserID); err != nil {
		return err
	}
	if !ValidCode(r.Code) {
		return Invalid("coupon_code", "is not a coupon code")
	}
	return checkOrder(r.UserID, r.Order)
}

// names reports whether the payload can name a coupon at all: Confirm and
// Cancel of one that cannot have nothing to do.
func (r BranchRequest) names() bool { return r.UserID > 0 && ValidCode(r.Code) }

// validate checks a return's payload.
func (r ReturnRequest) validate() error {
	if err := CheckRequestID("request_id", r.RequestID); err != nil {
		return err
	}
	if err := checkID("user_id", r.UserID); err != nil {
		return err
	}
	if !ValidCode(r.Code) {
		return Invalid("coupon_code", "is not a coupon code")
	}
	if err := CheckRequestID("order_no", r.OrderNo); err != nil {
		return err
	}
	return checkBranchText("reason", r.Reason, 255)
}

const phoneHint = "must be an E.164 number such as +8613800138000 or an 11-digit mainland mobile number"

// ParsePhone normalises s: E.164 (with its leading +), or an 11-digit
// mainland China mobile number (1[3-9] and 9 digits), which gets +86.
// Spaces and hyphens are ignored; +86 numbers must be mainland mobiles.
// The error never repeats s, which may be personal data.
func ParsePhone(s string) (Phone, error) {
	s = strings.TrimSpace(s)
	if len(s) > 32 {
		return "", Invalid("phone", phoneHint)
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			b.WriteByte(c)
		case c == '+' && i == 0:
			b.WriteByte(c)
		case c == ' ' || c == '-':
		default:
			return "", Invalid("phone", phoneHint)
		}
	}
	v := b.String()
	if !strings.HasPrefix(v, "+") {
		if !mainlandMobile(v) {
			return "", Invalid("phone", phoneHint)
		}
		v = "+86" + v
	}
	d := v[1:]
	if len(d) < 8 || len(d) > 15 || d[0] == '0' {
		return "", Invalid("phone", phoneHint)
	}
	if strings.HasPrefix(d, "86") && !mainlandMobile(d[2:]) {
		return "", Invalid("phone", "a +86 number must be a mainland mobile number (1[3-9] and 9 digits)")
	}
	return Phone(v), nil
}

func mainlandMobile(d string) bool {
	if len(d) != 11 || d[0] != '1' || d[1] < '3' || d[1] > '9' {
		return false
	}
	for i := 2; i < len(d); i++ {
		if d[i] < '0' || d[i] > '9' {
			return false
		}
	}
	return true
}
