package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/dtm-labs/dtm/client/dtmcli"
	"github.com/dtm-labs/dtm/client/dtmcli/dtmimp"
	"github.com/dtm-labs/dtm/dtmsvr"
	"github.com/dtm-labs/dtm/dtmsvr/storage"
	"github.com/dtm-labs/dtm/dtmutil"
	"github.com/gin-gonic/gin"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The coordinator serves the part of DTM's API the project uses, and
// refuses the rest: each route it serves is one more way to change a
// transaction behind its participants' backs (DTM's forceStop fails a
// transaction without a single Cancel; its JSON-RPC submit skips every
// Confirm of a submitted TCC).
//
// Used: the DTM client's calls over gRPC (NewGid, Prepare, Submit, Abort,
// RegisterBranch) and HTTP (newGid, prepare, submit, abort, registerBranch),
// the status query (internal/dtmquery: the console, the janitor, reconcile,
// chaos), the transaction list, /api/ping and /api/metrics. Refused: JSON-
// RPC, workflows, topics, forceStop, the cron resets, the KV scans, the
// legacy branch routes and the version.

// Reasons of the coordinator's refusals, in the body's "reason" (HTTP) or
// the google.rpc.ErrorInfo (gRPC).
const (
	ReasonRouteNotServed     = "ROUTE_NOT_SERVED"
	ReasonTransTypeNotServed = "TRANS_TYPE_NOT_SERVED"
	ReasonTransTypeMismatch  = "TRANS_TYPE_MISMATCH"
	ReasonMissingGID         = "MISSING_GID"
	ReasonBadRequest         = "BAD_REQUEST"
	ReasonTransNotFound      = "TRANS_NOT_FOUND"
)

// errorDomain is the google.rpc.ErrorInfo domain of the refusals.
const errorDomain = "coupon.coordinator"

// servedTypes are the transaction types the project runs: TCC orders, Saga
// orders and 2-phase messages (refunds).
var servedTypes = map[string]bool{"tcc": true, "saga": true, "msg": true}

// refusal is a request the coordinator does not serve.
type refusal struct {
	code   codes.Code
	reason string
	msg    string
}

func (r *refusal) Error() string { return r.msg }

func (r *refusal) httpStatus() int {
	switch r.code {
	case codes.Unimplemented, codes.NotFound:
		return http.StatusNotFound
	case codes.InvalidArgument:
		return http.StatusBadRequest
	}
	return http.StatusForbidden
}

func (r *refusal) grpcStatus() error {
	s, err := status.New(r.code, r.msg).WithDetails(&errdetails.ErrorInfo{Domain: errorDomain, Reason: r.reason})
	if err != nil {
		return status.Error(r.code, r.msg)
	}
	return s.Err()
}

func refuseType(transType string) *refusal {
	return &refusal{codes.InvalidArgument, ReasonTransTypeNotServed,
		fmt.Sprintf("transaction type %q is not served here (tcc, saga, msg are)", transType)}
}

// guardSubmit is the one check in front of every Submit, over HTTP or
// gRPC. It decides from the transaction the store holds, never from the
// request's label (reqType only has to agree with it):
//
//   - unknown gid: a saga or msg Submit creates the transaction (DTM's
//     svcSubmit takes it); a TCC must have been prepared (NotFound; DTM
//     would record an empty TCC as succeed).
//   - prepared TCC: moved to submitted if it still is, then confirmed from
//     its stored branches. DTM's svcSubmit would confirm the branches the
//     request lists — none, for TCC — if another Submit moved it first.
//   - prepared msg: DTM's svcSubmit takes it.
//   - submitted: processed from its stored branches (the Confirms its cron
//     would send anyway, all idempotent). DTM v1.19.0's svcSubmit would
//     process the request's branch list, which for TCC is empty, and mark
//     it succeed without a single Confirm: the order paid, the coupon
//     LOCKED forever.
//   - succeed: OK. aborting, failed: FAILURE.
//
// pass is true when DTM's svcSubmit is to take the request; otherwise r is
// the answer (nil for OK, an error, or a *refusal).
func guardSubmit(ctx context.Context, gid, reqType string) (r any, pass bool) {
	if gid == "" {
		return &refusal{codes.InvalidArgument, ReasonMissingGID, "submit without a gid"}, false
	}
	store := dtmsvr.GetStore()
	for range 3 {
		g := store.FindTransGlobalStore(gid)
		if g == nil {
			switch {
			case !servedTypes[reqType]:
				return refuseType(reqType), false
			case reqType == "tcc":
				// Not FAILURE: a Redis store forgets finished transactions,
				// and this one may have committed long ago.
				return &refusal{codes.NotFound, ReasonTransNotFound,
					fmt.Sprintf("no tcc transaction %s is known: a tcc is prepared before it is submitted", gid)}, false
			}
			return nil, true
		}
		if !servedTypes[g.TransType] {
			return refuseType(g.TransType), false
		}
		if reqType != g.TransType {
			return &refusal{codes.InvalidArgument, ReasonTransTypeMismatch,
				fmt.Sprintf("transaction %s is %s, not %q", gid, g.TransType, reqType)}, false
		}
		switch g.Status {
		case dtmcli.StatusPrepared:
			if g.TransType != "tcc" {
				return nil, true
			}
			if !markSubmitted(g) {
				continue // another request moved it: decide again
			}
			fallthrough
		case dtmcli.StatusSubmitted:
			t := &dtmsvr.TransGlobal{TransGlobalStore: *g, Context: ctx}
			return t.Process(store.FindBranches(gid)), false
		case dtmcli.StatusSucceed:
			return nil, false
		}
		return fmt.Errorf("current status '%s', cannot submit. %w", g.Status, dtmcli.ErrFailure), false
	}
	return fmt.Errorf("transaction %s changed status under three submits in a row; retry", gid), false
}

// markSubmitted moves g from prepared to submitted, reporting false if it
// was no longer prepared.
func markSubmitted(g *storage.TransGlobalStore) (ok bool) {
	defer func() {
		if x := recover(); x != nil {
			if err, isErr := x.(error); isErr && errors.Is(err, storage.ErrNotFound) {
				ok = false
				return
			}
			panic(x)
		}
	}()
	now := time.Now()
	g.UpdateTime = &now
	dtmsvr.GetStore().ChangeGlobalStatus(g, dtmcli.StatusSubmitted, []string{"status", "update_time"}, false)
	return true
}

// guardHTTP is the HTTP API's guard, in front of DTM's handlers: the
// routes the project uses pass (submit through guardSubmit), the
// transaction reads are answered here with credentials redacted, and every
// other route is refused with 404 ROUTE_NOT_SERVED. It decides on the
// route gin matched, so any spelling of a path that reaches a handler is
// judged as that handler.
func guardHTTP(log *slog.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		switch c.Request.Method + " " + c.FullPath() {
		case "GET /api/ping", "GET /api/metrics", "GET /api/dtmsvr/newGid",
			"POST /api/dtmsvr/abort", "POST /api/dtmsvr/registerBranch":
			return
		case "POST /api/dtmsvr/prepare":
			if t, ok := readTrans(c); ok && !servedTypes[t.TransType] {
				writeRefusal(c, refuseType(t.TransType))
			}
		case "POST /api/dtmsvr/submit":
			submitHTTP(c)
		case "GET /api/dtmsvr/query":
			dtmutil.WrapHandler2(queryHTTP)(c)
			c.Abort()
		case "GET /api/dtmsvr/all":
			dtmutil.WrapHandler2(allHTTP)(c)
			c.Abort()
		default:
			log.Warn("refused a dtm route the project does not use", "method", c.Request.Method, "path", c.Request.URL.Path)
			writeRefusal(c, &refusal{codes.Unimplemented, ReasonRouteNotServed,
				fmt.Sprintf("%s %s is not served by this coordinator", c.Request.Method, c.Request.URL.Path)})
		}
	}
}

func writeRefusal(c *gin.Context, r *refusal) {
	c.AbortWithStatusJSON(r.httpStatus(), gin.H{"reason": r.reason, "message": r.msg})
}

// readTrans reads a request's transaction as DTM's handlers do (same
// decoder) and leaves the body for them; it answers a body that is not one
// with 400 BAD_REQUEST.
func readTrans(c *gin.Context) (*dtmsvr.TransGlobal, bool) {
	body, err := c.GetRawData()
	if err != nil {
		writeRefusal(c, &refusal{codes.InvalidArgument, ReasonBadRequest, "read body: " + err.Error()})
		return nil, false
	}
	c.Request.Body = io.NopCloser(bytes.NewReader(body))
	var t dtmsvr.TransGlobal
	if err := json.Unmarshal(body, &t); err != nil {
		writeRefusal(c, &refusal{codes.InvalidArgument, ReasonBadRequest, "decode transaction: " + err.Error()})
		return nil, false
	}
	return &t, true
}

// submitHTTP puts guardSubmit in front of DTM's submit handler, with the
// gid escaped as that handler escapes it.
func submitHTTP(c *gin.Context) {
	t, ok := readTrans(c)
	if !ok {
		return
	}
	var pass bool
	r, p := catch(func() any { // DTM's store panics on errors
		r, ok := guardSubmit(c.Request.Context(), dtmimp.Escape(t.Gid), t.TransType)
		pass = ok
		return r
	})
	if p != nil {
		r = panicError(p)
	} else if pass {
		return
	}
	if ref, ok := r.(*refusal); ok {
		writeRefusal(c, ref)
		return
	}
	dtmutil.WrapHandler2(func(*gin.Context) any { return r })(c)
	c.Abort()
}

// queryHTTP is DTM's GET /api/dtmsvr/query with credentials redacted.
func queryHTTP(c *gin.Context) any {
	gid := c.Query("gid")
	if gid == "" {
		return errors.New("no gid specified")
	}
	store := dtmsvr.GetStore()
	trans := store.FindTransGlobalStore(gid)
	branches := store.FindBranches(gid)
	redactTrans(trans)
	return map[string]any{"transaction": trans, "branches": branches}
}

// allHTTP is DTM's GET /api/dtmsvr/all with credentials redacted.
func allHTTP(c *gin.Context) any {
	position := c.Query("position")
	limit, err := strconv.ParseInt(dtmimp.OrString(c.Query("limit"), "100"), 10, 64)
	if err != nil {
		return fmt.Errorf("limit: %w", err)
	}
	store := dtmsvr.GetStore()
	var globals []storage.TransGlobalStore
	if gid := c.Query("gid"); gid != "" {
		if g := store.FindTransGlobalStore(gid); g != nil {
			globals = append(globals, *g)
		}
	} else {
		start, err := millis(c.Query("createTimeStart"))
		if err != nil {
			return err
		}
		end, err := millis(c.Query("createTimeEnd"))
		if err != nil {
			return err
		}
		globals = store.ScanTransGlobalStores(&position, limit, storage.TransGlobalScanCondition{
			Status: c.Query("status"), TransType: c.Query("transType"), CreateTimeStart: start, CreateTimeEnd: end,
		})
	}
	for i := range globals {
		redactTrans(&globals[i])
	}
	return map[string]any{"transactions": globals, "next_position": position}
}

// millis parses DTM's Unix-millisecond time parameters; "" is no bound.
func millis(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q: %w", s, err)
	}
	return time.Unix(ms/1000, 0), nil
}
