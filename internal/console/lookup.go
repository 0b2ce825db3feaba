package console

import (
	"net/http"
	"strings"

	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

type lookupData struct {
	Code, User string
	Searched   bool
	Records    []lookupRecord
	Next       string
}

type lookupRecord struct {
	Coupon *couponv1.Coupon
	Ledger []*couponv1.LedgerEntry
	// DTM is the coordinator's status of a LOCKED coupon's transaction.
	DTM, DTMProblem string
}

// coupons looks coupons up by code or by user, with their ledger history
// and, for a LOCKED one, the coordinator's view of its transaction.
func (c *Console) coupons(w http.ResponseWriter, r *http.Request, ss *session) {
	q := r.URL.Query()
	d := lookupData{Code: strings.TrimSpace(q.Get("code")), User: strings.TrimSpace(q.Get("user"))}
	v := view{Title: "Coupon lookup", Nav: "coupons"}
	if d.Code == "" && d.User == "" {
		c.render(w, r, ss, "coupons", view{Title: v.Title, Nav: v.Nav, Data: d})
		return
	}
	d.Searched = true
	req := &couponv1.LookupCouponsRequest{CouponCode: d.Code, PageSize: 50, PageToken: q.Get("page_token")}
	if d.User != "" {
		user, p := parseInt("user", d.User, 64)
		if p != nil {
			c.render(w, r, ss, "coupons", view{Title: v.Title, Nav: v.Nav, Problem: p, Data: d})
			return
		}
		req.UserId = user
	}
	ctx, cancel := c.call(r, ss)
	defer cancel()
	res, err := c.d.Admin.LookupCoupons(ctx, req)
	if err != nil {
		c.render(w, r, ss, "coupons", view{Title: v.Title, Nav: v.Nav, Problem: describe(err), Data: d})
		return
	}
	d.Next = res.NextPageToken
	for _, rec := range res.Records {
		lr := lookupRecord{Coupon: rec.Coupon, Ledger: rec.Ledger}
		if rec.Coupon.GetStatus() == couponv1.Coupon_LOCKED && rec.Coupon.Gid != "" {
			lr.DTM, lr.DTMProblem = c.transaction(r, rec.Coupon.Gid)
		}
		d.Records = append(d.Records, lr)
	}
	c.render(w, r, ss, "coupons", view{Title: v.Title, Nav: v.Nav, Data: d})
}

func (c *Console) transaction(r *http.Request, gid string) (status, problem string) {
	if c.d.Transactions == nil {
		return "", "no coordinator address is configured (console.dtm_http_addr)"
	}
	status, found, err := c.d.Transactions.Status(r.Context(), gid)
	switch {
	case err != nil:
		c.d.Log.WarnContext(r.Context(), "console: query dtm", "gid", gid, "err", err)
		return "", "the coordinator did not answer: " + err.Error()
	case !found:
		return "", "the coordinator does not know this transaction"
	}
	return status, ""
}
