package console

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// DTMHTTP asks a DTM coordinator's HTTP API for a transaction's status
// (its gRPC API has no query).
type DTMHTTP struct {
	// Addr is the coordinator's HTTP host:port, e.g. 127.0.0.1:36789.
	Addr   string
	Client *http.Client
}

var _ Transactions = (*DTMHTTP)(nil)

// Status implements Transactions with GET /api/dtmsvr/query?gid=….
func (d *DTMHTTP) Status(ctx context.Context, gid string) (string, bool, error) {
	c := d.Client
	if c == nil {
		c = &http.Client{Timeout: 3 * time.Second}
	}
	u := url.URL{Scheme: "http", Host: d.Addr, Path: "/api/dtmsvr/query", RawQuery: url.Values{"gid": {gid}}.Encode()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", false, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", false, fmt.Errorf("query dtm transaction %s: %w", gid, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", false, fmt.Errorf("query dtm transaction %s: %w", gid, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", false, fmt.Errorf("query dtm transaction %s: http %d: %.200s", gid, resp.StatusCode, body)
	}
	var out struct {
		Transaction *struct {
			Status string `json:"status"`
		} `json:"transaction"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return "", false, fmt.Errorf("query dtm transaction %s: decode: %w", gid, err)
	}
	if out.Transaction == nil || out.Transaction.Status == "" {
		return "", false, nil
	}
	return out.Transaction.Status, true, nil
}
