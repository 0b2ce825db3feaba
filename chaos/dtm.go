package chaos

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/dtm-labs/client/dtmcli/dtmimp"
	"github.com/dtm-labs/client/dtmgrpc"
	"github.com/dtm-labs/client/dtmgrpc/dtmgimp"
	"google.golang.org/protobuf/proto"

	"github.com/opencoupon/coupon/client/coupontcc"
	"github.com/opencoupon/coupon/internal/dtmquery"
)

// DTM global transaction statuses (transaction.status of the query API).
const (
	statusPrepared  = "prepared"
	statusSubmitted = "submitted"
	statusAborting  = "aborting"
	statusSucceed   = "succeed"
	statusFailed    = "failed"
	// statusUnknown: the coordinators have no such gid (its Prepare never
	// reached them).
	statusUnknown = "unknown"
	// statusUndecided: a direct branch sequence whose Try answer was lost,
	// until the ledger says whether it committed.
	statusUndecided = "undecided"
)

func finished(st string) bool {
	return st == statusSucceed || st == statusFailed || st == statusUnknown
}

var httpClient = &http.Client{Timeout: 3 * time.Second}

// queryStatus asks a coordinator that answers (A, then B) for a gid's status
// over DTM's HTTP query API; the gRPC API has none.
func (s *Stack) queryStatus(ctx context.Context, gid string) (string, error) {
	t, err := s.queryTransaction(ctx, gid)
	return t.Status, err
}

// queryTransaction asks the coordinators in turn; a gid none of them knows
// is statusUnknown.
func (s *Stack) queryTransaction(ctx context.Context, gid string) (dtmquery.Transaction, error) {
	var last error
	for _, h := range s.coordHTTP {
		t, known, err := dtmquery.Client{Addr: h, HTTP: httpClient}.Transaction(ctx, gid)
		if err != nil {
			last = err
			continue
		}
		if !known {
			return dtmquery.Transaction{Status: statusUnknown}, nil
		}
		return t, nil
	}
	return dtmquery.Transaction{}, fmt.Errorf("no coordinator answered the query of %s: %w", gid, last)
}

// retryGrace bounds how far past its deadline waitFinished waits for the
// coordinator's own next attempt at an unfinished transaction.
const retryGrace = 10 * time.Minute

// waitFinished polls every gid until DTM reports it finished or the deadline
// passes; it returns the last status of each. DTM retries a failed branch
// call after a wait that doubles each time, without a cap, so a transaction
// whose Confirm kept failing under a fault that lasted minutes is next tried
// minutes after the fault healed: while the coordinator has such a retry
// scheduled, the deadline moves to just after it, up to retryGrace past the
// original. What is unfinished then is reported as such by the caller.
func (s *Stack) waitFinished(ctx context.Context, gids []string, deadline time.Time) (map[string]string, error) {
	out := make(map[string]string, len(gids))
	pending := append([]string(nil), gids...)
	limit := deadline.Add(retryGrace)
	for {
		var still []string
		var nextTry time.Time // the latest retry the coordinator has scheduled
		for _, g := range pending {
			t, err := s.queryTransaction(ctx, g)
			if err != nil {
				still = append(still, g)
				continue
			}
			out[g] = t.Status
			if !finished(t.Status) {
				still = append(still, g)
				if t.NextCronTime.After(nextTry) {
					nextTry = t.NextCronTime
				}
			}
		}
		pending = still
		if len(pending) == 0 {
			return out, nil
		}
		if now := time.Now(); now.After(deadline) {
			if !nextTry.After(now) || !nextTry.Before(limit) {
				return out, nil // the caller reports what did not finish
			}
			deadline = nextTry.Add(15 * time.Second)
		}
		select {
		case <-ctx.Done():
			return out, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// tcc is a TCC global transaction driven step by step, the way an order
// service does it, so that a scenario can lose a Submit's answer, submit
// twice, or run a second transaction for the same order in between.
type tcc struct {
	*dtmgrpc.TccGrpc
}

// newTCC prepares nothing yet: it only names the transaction of order o.
// dtm is the coordinator's gRPC address the order service talks to.
func newTCC(ctx context.Context, dtm, gid string, o directOrder) (*tcc, error) {
	t := &dtmgrpc.TccGrpc{TransBase: *dtmimp.NewTransBase(gid, "tcc", dtm, "")}
	t.Context = ctx
	t.WaitResult = true
	t.TimeoutToFail = 8
	t.RequestTimeout = 2
	// The order service's branch credential for this gid and coupon,
	// forwarded by DTM to every branch. The Trys carry the shop's token
	// themselves (tryCoupon).
	h, err := coupontcc.BranchHeaders(coupontcc.Signer{Caller: "shop", Key: shopBranchKey}, gid, coupontcc.OrderOf(o.branchRequest()))
	if err != nil {
		return nil, err
	}
	t.BranchHeaders = h
	return &tcc{t}, nil
}

func (t *tcc) call(ctx context.Context, op string) error {
	saved := t.Context
	t.Context = ctx
	defer func() { t.Context = saved }()
	return dtmgimp.DtmGrpcCall(&t.TransBase, op)
}

func (t *tcc) prepare(ctx context.Context) error { return t.call(ctx, "Prepare") }
func (t *tcc) submit(ctx context.Context) error  { return t.call(ctx, "Submit") }
func (t *tcc) abort(ctx context.Context) error {
	t.RollbackReason = "order service gave up"
	return t.call(ctx, "Abort")
}

// branch registers a branch whose Try goes to tryTarget and whose Confirm
// and Cancel DTM sends to phase2Target, and runs the Try.
func (t *tcc) branch(ctx context.Context, req proto.Message, tryTarget, phase2Target, try, confirm, cancel string, reply any) error {
	saved := t.Context
	t.Context = ctx
	defer func() { t.Context = saved }()
	return t.CallBranch(req, tryTarget+try, phase2Target+confirm, phase2Target+cancel, reply)
}
