package console

import (
	"context"
	"net/http"
	"time"

	"github.com/opencoupon/coupon/internal/dtmquery"
)

// DTMHTTP asks a DTM coordinator's HTTP API for a transaction's status
// (its gRPC API has no query).
type DTMHTTP struct {
	// Addr is the coordinator's HTTP host:port, e.g. 127.0.0.1:36789.
	Addr   string
	Client *http.Client
}

var _ Transactions = (*DTMHTTP)(nil)

// Status implements Transactions.
func (d *DTMHTTP) Status(ctx context.Context, gid string) (string, bool, error) {
	c := d.Client
	if c == nil {
		c = &http.Client{Timeout: 3 * time.Second} // a page waits for it
	}
	return dtmquery.Client{Addr: d.Addr, HTTP: c}.Status(ctx, gid)
}
