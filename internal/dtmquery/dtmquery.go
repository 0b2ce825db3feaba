// Package dtmquery asks a DTM coordinator for a global transaction's status
// over its HTTP API, GET /api/dtmsvr/query?gid=…: DTM's gRPC API has no
// query. The console, the barrier janitor, reconcile's repairs and chaos
// all ask through it.
package dtmquery

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// The statuses of transaction.status.
const (
	Prepared  = "prepared"
	Submitted = "submitted"
	Aborting  = "aborting"
	Succeed   = "succeed"
	Failed    = "failed"
)

// Client queries one coordinator.
type Client struct {
	// Addr is the coordinator's HTTP address: host:port ("127.0.0.1:36789")
	// or a URL.
	Addr string
	// HTTP defaults to a client with a 5 s timeout.
	HTTP *http.Client
}

var defaultHTTP = &http.Client{Timeout: 5 * time.Second}

// Status returns the transaction's status; known is false when the
// coordinator has no such gid (DTM v1.19 answers 200 with a null
// transaction). Any other answer without a status is an error.
func (c Client) Status(ctx context.Context, gid string) (status string, known bool, err error) {
	t, known, err := c.Transaction(ctx, gid)
	return t.Status, known, err
}

// Transaction is what the query tells of a global transaction.
type Transaction struct {
	Status string
	// NextCronTime is when the coordinator will next try an unfinished
	// transaction (zero when it did not say): after each failed branch
	// call the wait doubles, without a cap.
	NextCronTime time.Time
}

// Transaction returns the transaction's status and next retry; known is
// false when the coordinator has no such gid.
func (c Client) Transaction(ctx context.Context, gid string) (t Transaction, known bool, err error) {
	base := c.Addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/api/dtmsvr/query?gid="+url.QueryEscape(gid), nil)
	if err != nil {
		return t, false, fmt.Errorf("query dtm transaction %s: %w", gid, err)
	}
	h := c.HTTP
	if h == nil {
		h = defaultHTTP
	}
	resp, err := h.Do(req)
	if err != nil {
		return t, false, fmt.Errorf("query dtm transaction %s: %w", gid, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return t, false, fmt.Errorf("query dtm transaction %s: %w", gid, err)
	}
	if resp.StatusCode != http.StatusOK {
		return t, false, fmt.Errorf("query dtm transaction %s: %s: %.200s", gid, resp.Status, body)
	}
	var out struct {
		Transaction *struct {
			Status       string     `json:"status"`
			NextCronTime *time.Time `json:"next_cron_time"`
		} `json:"transaction"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return t, false, fmt.Errorf("query dtm transaction %s: decode %.200q: %w", gid, body, err)
	}
	if out.Transaction == nil {
		return t, false, nil
	}
	if out.Transaction.Status == "" {
		return t, false, fmt.Errorf("query dtm transaction %s: no status in %.200q", gid, body)
	}
	t.Status = out.Transaction.Status
	if out.Transaction.NextCronTime != nil {
		t.NextCronTime = *out.Transaction.NextCronTime
	}
	return t, true, nil
}
