package mysql

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/opencoupon/coupon/participant"
)

// Catalog keeps campaigns, templates, stock top-ups and the audit log in
// the main database (participant.Catalog).
type Catalog struct{ *shards }

var _ participant.Catalog = (*Catalog)(nil)

const campaignCols = `id, request_id, name, description, campaign_type, status, start_time, end_time,
 created_by, approved_by, created_at, updated_at`

type scanner interface{ Scan(...any) error }

func scanCampaign(r scanner) (*participant.Campaign, error) {
	var c participant.Campaign
	var req sql.NullString
	err := r.Scan(&c.ID, &req, &c.Name, &c.Description, &c.Type, &c.Status, &c.StartTime, &c.EndTime,
		&c.CreatedBy, &c.ApprovedBy, &c.CreatedAt, &c.UpdatedAt)
	c.RequestID = req.String
	return &c, err
}

// CreateCampaign inserts c and its audit row, or returns the campaign of
// an earlier call with the same request ID.
func (s *Catalog) CreateCampaign(ctx context.Context, c *participant.Campaign, actor participant.Actor) (bool, error) {
	err := s.inTx(ctx, s.main, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO campaign (request_id, name, description, campaign_type,
 status, start_time, end_time, created_by, approved_by, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)`,
			nullString(c.RequestID), c.Name, c.Description, c.Type, c.Status, c.StartTime.UTC(), c.EndTime.UTC(),
			c.CreatedBy, c.ApprovedBy, c.CreatedAt, c.UpdatedAt)
		if err != nil {
			return err
		}
		if c.ID, err = res.LastInsertId(); err != nil {
			return err
		}
		return writeAudit(ctx, tx, actor, participant.EntityCampaign, c.ID, nil, c, c.CreatedAt)
	})
	if _, dup := isDuplicate(err); dup && c.RequestID != "" {
		prev, err := scanCampaign(s.main.QueryRowContext(ctx, `SELECT `+campaignCols+` FROM campaign WHERE request_id = ?`, c.RequestID))
		if err != nil {
			return false, wrap("read campaign by request id", err)
		}
		*c = *prev
		return true, nil
	}
	return false, wrap("insert campaign", err)
}

// UpdateCampaign runs fn on the locked row and writes the result.
func (s *Catalog) UpdateCampaign(ctx context.Context, id int64, fn func(*participant.Campaign) error, actor participant.Actor) (*participant.Campaign, error) {
	var c *participant.Campaign
	err := s.inTx(ctx, s.main, func(tx *sql.Tx) error {
		var err error
		c, err = scanCampaign(tx.QueryRowContext(ctx, `SELECT `+campaignCols+` FROM campaign WHERE id = ? FOR UPDATE`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return notFound("campaign", id)
		}
		if err != nil {
			return err
		}
		before := *c
		if err := fn(c); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE campaign SET name=?, description=?, campaign_type=?, status=?,
 start_time=?, end_time=?, approved_by=?, updated_at=? WHERE id=?`,
			c.Name, c.Description, c.Type, c.Status, c.StartTime.UTC(), c.EndTime.UTC(), c.ApprovedBy, c.UpdatedAt, id); err != nil {
			return err
		}
		return writeAudit(ctx, tx, actor, participant.EntityCampaign, id, &before, c, c.UpdatedAt)
	})
	if err != nil {
		return nil, wrap("update campaign", err)
	}
	return c, nil
}

// GetCampaign reads one campaign.
func (s *Catalog) GetCampaign(ctx context.Context, id int64) (*participant.Campaign, error) {
	c, err := scanCampaign(s.main.QueryRowContext(ctx, `SELECT `+campaignCols+` FROM campaign WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("campaign", id)
	}
	return c, wrap("read campaign", err)
}

func afterID(token string) (int64, error) {
	if token == "" {
		return 0, nil
	}
	id, err := strconv.ParseInt(token, 10, 64)
	if err != nil || id <= 0 {
		return 0, participant.Invalid("page_token", "is malformed")
	}
	return id, nil
}

// ListCampaigns pages through campaigns by descending ID.
func (s *Catalog) ListCampaigns(ctx context.Context, status participant.CampaignStatus, p participant.Page) ([]*participant.Campaign, string, error) {
	after, err := afterID(p.After)
	if err != nil {
		return nil, "", err
	}
	q := `SELECT ` + campaignCols + ` FROM campaign WHERE (? = 0 OR id < ?) AND (? = 0 OR status = ?) ORDER BY id DESC LIMIT ?`
	rows, err := s.main.QueryContext(ctx, q, after, after, status, status, p.Size+1)
	if err != nil {
		return nil, "", wrap("list campaigns", err)
	}
	defer rows.Close()
	var out []*participant.Campaign
	for rows.Next() {
		c, err := scanCampaign(rows)
		if err != nil {
			return nil, "", wrap("list campaigns", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, "", wrap("list campaigns", err)
	}
	next := ""
	if len(out) > p.Size {
		out = out[:p.Size]
		next = strconv.FormatInt(out[len(out)-1].ID, 10)
	}
	return out, next, nil
}

const templateCols = `id, request_id, campaign_id, name, description, logo, coupon_type, discount_amount,
 percent_off, max_discount, min_order_amount, product_lines, usage_rule, total_stock, per_user_limit,
 daily_use_limit, valid_from, valid_until, valid_days_after_claim, status, created_by, approved_by,
 sub_stock_count, version, created_at, updated_at, returnable, money_edited_by`

func scanTemplate(r scanner) (*participant.Template, error) {
	var t participant.Template
	var req sql.NullString
	var lines string
	err := r.Scan(&t.ID, &req, &t.CampaignID, &t.Name, &t.Description, &t.Logo, &t.Type, &t.DiscountAmount,
		&t.PercentOff, &t.MaxDiscount, &t.MinOrderAmount, &lines, &t.UsageRule, &t.TotalStock, &t.PerUserLimit,
		&t.DailyUseLimit, &t.ValidFrom, &t.ValidUntil, &t.ValidDaysAfterClaim, &t.Status, &t.CreatedBy, &t.ApprovedBy,
		&t.SubStockCount, &t.Version, &t.CreatedAt, &t.UpdatedAt, &t.Returnable, &t.MoneyEditedBy)
	if err != nil {
		return nil, err
	}
	t.RequestID = req.String
	if lines != "" {
		if err := json.Unmarshal([]byte(lines), &t.ProductLines); err != nil {
			return nil, fmt.Errorf("template %d product lines: %w", t.ID, err)
		}
	}
	return &t, nil
}

func productLines(t *participant.Template) string {
	if len(t.ProductLines) == 0 {
		return ""
	}
	b, _ := json.Marshal(t.ProductLines)
	return string(b)
}

// CreateTemplate inserts t and its audit row, or returns the template of
// an earlier call with the same request ID.
func (s *Catalog) CreateTemplate(ctx context.Context, t *participant.Template, actor participant.Actor) (bool, error) {
	err := s.inTx(ctx, s.main, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO coupon_template (request_id, campaign_id, name, description,
 logo, coupon_type, discount_amount, percent_off, max_discount, min_order_amount, product_lines, usage_rule,
 total_stock, per_user_limit, daily_use_limit, valid_from, valid_until, valid_days_after_claim, status,
 created_by, approved_by, sub_stock_count, version, created_at, updated_at, returnable, money_edited_by)
 VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
			nullString(t.RequestID), t.CampaignID, t.Name, t.Description, t.Logo, t.Type, t.DiscountAmount, t.PercentOff,
			t.MaxDiscount, t.MinOrderAmount, productLines(t), t.UsageRule, t.TotalStock, t.PerUserLimit, t.DailyUseLimit,
			t.ValidFrom.UTC(), t.ValidUntil.UTC(), t.ValidDaysAfterClaim, t.Status, t.CreatedBy, t.ApprovedBy,
			t.SubStockCount, t.Version, t.CreatedAt, t.UpdatedAt, t.Returnable, t.MoneyEditedBy)
		if err != nil {
			return err
		}
		if t.ID, err = res.LastInsertId(); err != nil {
			return err
		}
		if err := s.writeEvents(ctx, tx, templateChanged(t.ID, t.Version, t.CreatedAt)); err != nil {
			return err
		}
		return writeAudit(ctx, tx, actor, participant.EntityTemplate, t.ID, nil, t, t.CreatedAt)
	})
	if _, dup := isDuplicate(err); dup && t.RequestID != "" {
		prev, err := scanTemplate(s.main.QueryRowContext(ctx, `SELECT `+templateCols+` FROM coupon_template WHERE request_id = ?`, t.RequestID))
		if err != nil {
			return false, wrap("read template by request id", err)
		}
		*t = *prev
		return true, nil
	}
	return false, wrap("insert template", err)
}

func (s *Catalog) lockTemplate(ctx context.Context, tx *sql.Tx, id int64) (*participant.Template, error) {
	t, err := scanTemplate(tx.QueryRowContext(ctx, `SELECT `+templateCols+` FROM coupon_template WHERE id = ? FOR UPDATE`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("template", id)
	}
	return t, err
}

// writeTemplate writes t over the locked row it was read from, bumping
// its version. The WHERE names the version read as well: the row lock
// already keeps it, and a write that finds another version changes nothing
// and fails rather than overwrite an edit it did not see.
func writeTemplate(ctx context.Context, tx *sql.Tx, t *participant.Template) error {
	res, err := tx.ExecContext(ctx, `UPDATE coupon_template SET name=?, description=?, logo=?, discount_amount=?,
 percent_off=?, max_discount=?, min_order_amount=?, product_lines=?, usage_rule=?, total_stock=?,
 per_user_limit=?, daily_use_limit=?, valid_until=?, status=?, approved_by=?, money_edited_by=?, sub_stock_count=?,
 returnable=?, version=version+1, updated_at=? WHERE id=? AND version=?`,
		t.Name, t.Description, t.Logo, t.DiscountAmount, t.PercentOff, t.MaxDiscount, t.MinOrderAmount,
		productLines(t), t.UsageRule, t.TotalStock, t.PerUserLimit, t.DailyUseLimit, t.ValidUntil.UTC(),
		t.Status, t.ApprovedBy, t.MoneyEditedBy, t.SubStockCount, t.Returnable, t.UpdatedAt, t.ID, t.Version)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n != 1 {
		return fmt.Errorf("template %d changed under its row lock (version %d)", t.ID, t.Version)
	}
	t.Version++
	return nil
}

// UpdateTemplate runs fn on the locked row and writes the result.
func (s *Catalog) UpdateTemplate(ctx context.Context, id int64, fn func(*participant.Template) error, actor participant.Actor) (*participant.Template, error) {
	var t *participant.Template
	err := s.inTx(ctx, s.main, func(tx *sql.Tx) error {
		var err error
		if t, err = s.lockTemplate(ctx, tx, id); err != nil {
			return err
		}
		before := *t
		if err := fn(t); err != nil {
			return err
		}
		if err := writeTemplate(ctx, tx, t); err != nil {
			return err
		}
		if err := s.writeEvents(ctx, tx, templateChanged(t.ID, t.Version, t.UpdatedAt)); err != nil {
			return err
		}
		return writeAudit(ctx, tx, actor, participant.EntityTemplate, id, &before, t, t.UpdatedAt)
	})
	if err != nil {
		return nil, wrap("update template", err)
	}
	return t, nil
}

// GetTemplate reads one template.
func (s *Catalog) GetTemplate(ctx context.Context, id int64) (*participant.Template, error) {
	t, err := scanTemplate(s.main.QueryRowContext(ctx, `SELECT `+templateCols+` FROM coupon_template WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("template", id)
	}
	return t, wrap("read template", err)
}

// ListTemplates pages through templates by descending ID.
func (s *Catalog) ListTemplates(ctx context.Context, campaignID int64, status participant.TemplateStatus, p participant.Page) ([]*participant.Template, string, error) {
	after, err := afterID(p.After)
	if err != nil {
		return nil, "", err
	}
	rows, err := s.main.QueryContext(ctx, `SELECT `+templateCols+` FROM coupon_template
 WHERE (? = 0 OR id < ?) AND (? = 0 OR campaign_id = ?) AND (? = 0 OR status = ?) ORDER BY id DESC LIMIT ?`,
		after, after, campaignID, campaignID, status, status, p.Size+1)
	if err != nil {
		return nil, "", wrap("list templates", err)
	}
	defer rows.Close()
	var out []*participant.Template
	for rows.Next() {
		t, err := scanTemplate(rows)
		if err != nil {
			return nil, "", wrap("list templates", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, "", wrap("list templates", err)
	}
	next := ""
	if len(out) > p.Size {
		out = out[:p.Size]
		next = strconv.FormatInt(out[len(out)-1].ID, 10)
	}
	return out, next, nil
}

// AddStock locks the template, reads the earlier top-up of the request ID
// if any, and asks decide; when decide applies the top-up (it changes t),
// the top-up's record, the template and the audit row are written in the
// same transaction.
func (s *Catalog) AddStock(ctx context.Context, op participant.StockOp, decide func(t *participant.Template, prev *participant.StockOp) (bool, error), actor participant.Actor) (*participant.Template, bool, error) {
	var (
		t        *participant.Template
		replayed bool
	)
	err := s.inTx(ctx, s.main, func(tx *sql.Tx) error {
		var err error
		if t, err = s.lockTemplate(ctx, tx, op.TemplateID); err != nil {
			return err
		}
		var prev *participant.StockOp
		var p participant.StockOp
		err = tx.QueryRowContext(ctx, `SELECT request_id, template_id, amount, sub_stock_count, operator FROM stock_op WHERE request_id = ?`,
			op.RequestID).Scan(&p.RequestID, &p.TemplateID, &p.Amount, &p.SubStockCount, &p.Operator)
		switch {
		case err == nil:
			prev = &p
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		before := stockState{TotalStock: t.TotalStock, SubStockCount: t.SubStockCount}
		apply, err := decide(t, prev)
		if err != nil || !apply {
			replayed = !apply
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO stock_op (request_id, template_id, amount, sub_stock_count, operator, created_at)
 VALUES (?,?,?,?,?,?)`, op.RequestID, op.TemplateID, op.Amount, op.SubStockCount, op.Operator, t.UpdatedAt); err != nil {
			return err
		}
		if err := writeTemplate(ctx, tx, t); err != nil {
			return err
		}
		if err := s.writeEvents(ctx, tx, OutboxEvent{EventID: fmt.Sprintf("stock-%d.%s", t.ID, op.RequestID),
			Type: participant.EventStockAdded, TemplateID: t.ID, TemplateVersion: t.Version, StockAdded: op.Amount,
			RequestID: op.RequestID, OccurredAt: t.UpdatedAt}); err != nil {
			return err
		}
		after := stockState{TotalStock: t.TotalStock, SubStockCount: t.SubStockCount, RequestID: op.RequestID, Added: op.Amount}
		return writeAudit(ctx, tx, actor, participant.EntityStock, t.ID, &before, &after, t.UpdatedAt)
	})
	if _, dup := isDuplicate(err); dup {
		// A concurrent call with the same request ID won; report its result.
		t, err := s.GetTemplate(ctx, op.TemplateID)
		return t, true, err
	}
	if err != nil {
		return nil, false, wrap("add stock", err)
	}
	return t, replayed, nil
}

// inTx runs fn in a transaction, retrying when the server rolled it back
// for a deadlock or lock wait timeout.
func (s *shards) inTx(ctx context.Context, db *sql.DB, fn func(*sql.Tx) error) error {
	for attempt := 0; ; attempt++ {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		err = fn(tx)
		if err == nil {
			if err = tx.Commit(); err != nil {
				return fmt.Errorf("%w: %w", participant.ErrCommitUnknown, err)
			}
			return nil
		}
		_ = tx.Rollback()
		if !isRetryable(err) || attempt == 4 || ctx.Err() != nil {
			return err
		}
	}
}
