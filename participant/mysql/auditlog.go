package mysql

import (
	"context"
	"database/sql"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/opencoupon/coupon/participant"
)

// stockState is what the audit log records of a stock top-up.
type stockState struct {
	TotalStock    int64
	SubStockCount int32
	RequestID     string `json:",omitempty"`
	Added         int64  `json:",omitempty"`
}

// writeAudit appends an audit row in the change's transaction; before is
// nil for a creation.
func writeAudit(ctx context.Context, tx *sql.Tx, actor participant.Actor, entity string, id int64, before, after any, at time.Time) error {
	var b []byte
	if before != nil {
		var err error
		if b, err = json.Marshal(before); err != nil {
			return err
		}
	}
	a, err := json.Marshal(after)
	if err != nil {
		return err
	}
	identity := actor.Identity
	if identity == "" {
		identity = "anonymous"
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO audit_log (identity, method, entity_type, entity_id, before_json, after_json, created_at)
 VALUES (?,?,?,?,?,?,?)`, identity, actor.Method, entity, id, string(b), string(a), at.UTC())
	return err
}

// ListAudit pages through the audit log by descending ID.
func (s *Catalog) ListAudit(ctx context.Context, f participant.AuditFilter, p participant.Page) ([]participant.AuditEntry, string, error) {
	after, err := afterID(p.After)
	if err != nil {
		return nil, "", err
	}
	var where []string
	var args []any
	add := func(cond string, v any) {
		where = append(where, cond)
		args = append(args, v)
	}
	if after > 0 {
		add("id < ?", after)
	}
	if f.EntityType != "" {
		add("entity_type = ?", f.EntityType)
	}
	if f.EntityID > 0 {
		add("entity_id = ?", f.EntityID)
	}
	if f.Identity != "" {
		add("identity = ?", f.Identity)
	}
	if !f.Since.IsZero() {
		add("created_at >= ?", f.Since.UTC())
	}
	if !f.Until.IsZero() {
		add("created_at < ?", f.Until.UTC())
	}
	q := `SELECT id, identity, method, entity_type, entity_id, before_json, after_json, created_at FROM audit_log`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY id DESC LIMIT ?"
	args = append(args, p.Size+1)
	rows, err := s.main.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, "", wrap("list audit log", err)
	}
	defer rows.Close()
	var out []participant.AuditEntry
	for rows.Next() {
		var e participant.AuditEntry
		if err := rows.Scan(&e.ID, &e.Identity, &e.Method, &e.EntityType, &e.EntityID, &e.Before, &e.After, &e.CreatedAt); err != nil {
			return nil, "", wrap("list audit log", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, "", wrap("list audit log", err)
	}
	next := ""
	if len(out) > p.Size {
		out = out[:p.Size]
		next = strconv.FormatInt(out[len(out)-1].ID, 10)
	}
	return out, next, nil
}
