package janitor

import (
	"context"
	"net/http"

	"github.com/opencoupon/coupon/internal/dtmquery"
)

// CoordinatorStatus asks the DTM server at addr (its HTTP address,
// "127.0.0.1:36789") for a transaction's status. A gid it does not know is
// Unknown here; an answer that carries no status is an error.
func CoordinatorStatus(addr string, client *http.Client) StatusFunc {
	c := dtmquery.Client{Addr: addr, HTTP: client}
	return func(ctx context.Context, gid string) (string, error) {
		st, known, err := c.Status(ctx, gid)
		if err != nil {
			return "", err
		}
		if !known {
			return Unknown, nil
		}
		return st, nil
	}
}
