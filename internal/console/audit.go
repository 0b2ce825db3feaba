package console

import (
	"encoding/json"
	"net/http"
	"reflect"
	"sort"

	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

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
