package janitor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// CoordinatorStatus asks the DTM server at addr (its HTTP address,
// "127.0.0.1:36789") for a transaction's status: GET
// /api/dtmsvr/query?gid=…, field transaction.status. DTM v1.19 answers a gid
// it does not know with 200 and a null transaction, which is Unknown here;
// any other answer that carries no status is an error.
func CoordinatorStatus(addr string, client *http.Client) StatusFunc {
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	base := "http://" + addr + "/api/dtmsvr/query?gid="
	return func(ctx context.Context, gid string) (string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+url.QueryEscape(gid), nil)
		if err != nil {
			return "", err
		}
		resp, err := client.Do(req)
		if err != nil {
			return "", fmt.Errorf("query coordinator: %w", err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return "", fmt.Errorf("query coordinator: %w", err)
		}
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("query coordinator: %s: %.200s", resp.Status, body)
		}
		var out struct {
			Transaction *struct {
				Status string `json:"status"`
			} `json:"transaction"`
		}
		if err := json.Unmarshal(body, &out); err != nil {
			return "", fmt.Errorf("query coordinator: decode %.200q: %w", body, err)
		}
		if out.Transaction == nil {
			return Unknown, nil
		}
		if out.Transaction.Status == "" {
			return "", fmt.Errorf("query coordinator: transaction %s without a status", gid)
		}
		return out.Transaction.Status, nil
	}
}
