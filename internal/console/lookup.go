package console

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"reflect"
	"sort"
	"strings"
	"time"

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

type auditData struct {
	EntityType, EntityID, Identity string
	Entries                        []auditEntry
	Next                           string
}

type auditEntry struct {
	*couponv1.AuditEntry
	// Changes lists the fields whose value differs between before and after.
	Changes []change
}

type change struct{ Field, Before, After string }

func (c *Console) audit(w http.ResponseWriter, r *http.Request, ss *session) {
	q := r.URL.Query()
	d := auditData{EntityType: q.Get("entity_type"), EntityID: q.Get("entity_id"), Identity: q.Get("identity")}
	v := view{Title: "Audit log", Nav: "audit"}
	id, p := parseInt("entity_id", d.EntityID, 64)
	if p != nil {
		v.Problem, v.Data = p, d
		c.render(w, r, ss, "audit", v)
		return
	}
	ctx, cancel := c.call(r, ss)
	defer cancel()
	res, err := c.d.Admin.ListAuditLog(ctx, &couponv1.ListAuditLogRequest{
		EntityType: d.EntityType, EntityId: id, Identity: d.Identity, PageSize: 50, PageToken: q.Get("page_token"),
	})
	if err != nil {
		v.Problem = describe(err)
	} else {
		d.Next = res.NextPageToken
		for _, e := range res.Entries {
			d.Entries = append(d.Entries, auditEntry{AuditEntry: e, Changes: changes(e.BeforeJson, e.AfterJson)})
		}
	}
	v.Data = d
	c.render(w, r, ss, "audit", v)
}

// changes compares two JSON objects field by field; a creation (before
// empty) lists every field of after.
func changes(before, after string) []change {
	var b, a map[string]any
	_ = json.Unmarshal([]byte(before), &b)
	_ = json.Unmarshal([]byte(after), &a)
	keys := map[string]bool{}
	for k := range b {
		keys[k] = true
	}
	for k := range a {
		keys[k] = true
	}
	var out []change
	for k := range keys {
		if !reflect.DeepEqual(b[k], a[k]) {
			out = append(out, change{Field: k, Before: jsonValue(b, k), After: jsonValue(a, k)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Field < out[j].Field })
	return out
}

func jsonValue(m map[string]any, k string) string {
	v, ok := m[k]
	if !ok {
		return "—"
	}
	if s, ok := v.(string); ok {
		return s
	}
	j, _ := json.Marshal(v)
	return string(j)
}

type reconcileData struct {
	Configured bool
	Runs       []reconcileRow
}

type reconcileRow struct {
	ReconcileRun
	Day     string
	Classes []classTotal
	Total   int64
}

type classTotal struct {
	Class string
	Count int64
}

func (c *Console) reconcile(w http.ResponseWriter, r *http.Request, ss *session) {
	v := view{Title: "Reconcile runs", Nav: "reconcile"}
	d := reconcileData{Configured: c.d.Reconcile != nil}
	if d.Configured {
		runs, err := c.d.Reconcile.Runs(r.Context(), 60)
		if err != nil {
			c.d.Log.WarnContext(r.Context(), "console: list reconcile runs", "err", err)
			v.Problem = &problem{Words: "The reconcile runs could not be read.", Reason: "UNAVAILABLE", Message: err.Error(), HTTP: http.StatusServiceUnavailable}
		}
		for _, run := range runs {
			row := reconcileRow{ReconcileRun: run, Day: run.Date.Format(time.DateOnly)}
			for class, n := range run.Totals {
				row.Classes = append(row.Classes, classTotal{class, n})
				row.Total += n
			}
			sort.Slice(row.Classes, func(i, j int) bool { return row.Classes[i].Class < row.Classes[j].Class })
			d.Runs = append(d.Runs, row)
		}
	}
	v.Data = d
	c.render(w, r, ss, "reconcile", v)
}

// reconcileReport serves the report.html of the run of one day: the path
// comes from the run list, never from the request.
func (c *Console) reconcileReport(w http.ResponseWriter, r *http.Request, ss *session) {
	if c.d.Reconcile == nil {
		http.NotFound(w, r)
		return
	}
	runs, err := c.d.Reconcile.Runs(r.Context(), 366)
	if err != nil {
		http.Error(w, "the reconcile runs could not be read", http.StatusServiceUnavailable)
		return
	}
	for _, run := range runs {
		if run.Date.Format(time.DateOnly) != r.PathValue("date") || run.ReportPath == "" {
			continue
		}
		f, err := os.Open(run.ReportPath)
		if err != nil {
			http.Error(w, fmt.Sprintf("the report of %s cannot be read", r.PathValue("date")), http.StatusNotFound)
			return
		}
		defer f.Close()
		// The report is a self-contained page of its own; it may carry
		// inline script and style, which the console's policy forbids.
		w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; sandbox allow-scripts")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		st, _ := f.Stat()
		http.ServeContent(w, r, "report.html", st.ModTime(), f)
		return
	}
	http.NotFound(w, r)
}
