package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	_ "unsafe" // go:linkname

	"github.com/dtm-labs/dtm/client/dtmcli"
	"github.com/dtm-labs/dtm/client/dtmgrpc"
	"github.com/dtm-labs/dtm/client/dtmgrpc/dtmgpb"
	"github.com/dtm-labs/dtm/dtmsvr"
	"github.com/dtm-labs/dtm/dtmsvr/storage"
	"github.com/dtm-labs/dtm/dtmutil"
	"github.com/gin-gonic/gin"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

// dtmsvr.StartSvr listens on every interface (":port"), exits the process
// when the gRPC port is taken, and starts workers that cannot be stopped. To
// serve on our own listeners instead, the unexported pieces it is built from
// are linked in by name below. The signatures must match
// github.com/dtm-labs/dtm v1.19.0 exactly (TestDTMVersion pins the version):
// a mismatch is not caught by the compiler. The gRPC service is rebuilt from
// the svc* functions, exactly as dtmsvr's api_grpc.go does, plus retries.

//go:linkname addRoute github.com/dtm-labs/dtm/dtmsvr.addRoute
func addRoute(engine *gin.Engine)

//go:linkname addJrpcRouter github.com/dtm-labs/dtm/dtmsvr.addJrpcRouter
func addJrpcRouter(engine *gin.Engine)

//go:linkname httpMetrics github.com/dtm-labs/dtm/dtmsvr.httpMetrics
func httpMetrics(app *gin.Engine) *gin.Engine

//go:linkname grpcMetrics github.com/dtm-labs/dtm/dtmsvr.grpcMetrics
func grpcMetrics(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error)

//go:linkname setServerInfoMetrics github.com/dtm-labs/dtm/dtmsvr.setServerInfoMetrics
func setServerInfoMetrics()

// updateBranchAsync flushes batched branch results forever.
//
//go:linkname updateBranchAsync github.com/dtm-labs/dtm/dtmsvr.updateBranchAsync
func updateBranchAsync()

//go:linkname svcSubmit github.com/dtm-labs/dtm/dtmsvr.svcSubmit
func svcSubmit(t *dtmsvr.TransGlobal) any

//go:linkname svcPrepare github.com/dtm-labs/dtm/dtmsvr.svcPrepare
func svcPrepare(t *dtmsvr.TransGlobal) any

//go:linkname svcAbort github.com/dtm-labs/dtm/dtmsvr.svcAbort
func svcAbort(t *dtmsvr.TransGlobal) any

//go:linkname svcRegisterBranch github.com/dtm-labs/dtm/dtmsvr.svcRegisterBranch
func svcRegisterBranch(transType string, branch *dtmsvr.TransBranch, data map[string]string) error

//go:linkname svcPrepareWorkflow github.com/dtm-labs/dtm/dtmsvr.svcPrepareWorkflow
func svcPrepareWorkflow(t *dtmsvr.TransGlobal) (*storage.TransGlobalStore, []dtmsvr.TransBranch, error)

// topicsCat is dtmsvr's KV category of topics.
const topicsCat = "topics"

// grpcServer is DTM's gRPC API (dtmsvr's dtmServer) with transient store
// errors retried where that is safe.
type grpcServer struct {
	dtmgpb.UnimplementedDtmServer
	retry retrier
}

var _ dtmgpb.DtmServer = (*grpcServer)(nil)

func (s *grpcServer) NewGid(ctx context.Context, in *emptypb.Empty) (*dtmgpb.DtmGidReply, error) {
	return &dtmgpb.DtmGidReply{Gid: dtmsvr.GenGid()}, nil
}

// Submit is retried only while the transaction is still prepared (or
// absent), and a Submit of a transaction already past prepared goes to
// resubmit instead of DTM's svcSubmit.
func (s *grpcServer) Submit(ctx context.Context, in *dtmgpb.DtmRequest) (*emptypb.Empty, error) {
	r := s.retry.do(ctx, "Submit", in.Gid, func() any {
		if r, handled := resubmit(ctx, in.Gid, in.TransType); handled {
			return r
		}
		return svcSubmit(dtmsvr.TransFromDtmRequest(ctx, in))
	}, func() bool { return notYetSubmitted(in.Gid) })
	return &emptypb.Empty{}, dtmgrpc.DtmError2GrpcError(r)
}

// resubmit answers a Submit of a transaction the store holds past
// prepared — an order service retrying a Submit whose answer it lost.
// DTM v1.19.0's svcSubmit would process the retry's own branch list, which
// for TCC and XA (branches registered one by one) is empty, and mark the
// transaction succeed without calling a single Confirm: the order paid, the
// coupon LOCKED forever. Instead: a finished success answers OK, a
// transaction still submitted is processed from its stored branches (the
// Confirms its cron would send anyway, all idempotent), and one rolling
// back or rolled back answers FAILURE. handled is false for a transaction
// still prepared or unknown, and for workflows (whose Submit sets status).
func resubmit(ctx context.Context, gid, transType string) (r any, handled bool) {
	if transType == "workflow" {
		return nil, false
	}
	g := dtmsvr.GetStore().FindTransGlobalStore(gid)
	if g == nil || g.Status == dtmcli.StatusPrepared {
		return nil, false
	}
	switch g.Status {
	case dtmcli.StatusSucceed:
		return nil, true
	case dtmcli.StatusSubmitted:
		t := &dtmsvr.TransGlobal{TransGlobalStore: *g, Context: ctx}
		return t.Process(dtmsvr.GetStore().FindBranches(gid)), true
	}
	return fmt.Errorf("current status '%s', cannot submit. %w", g.Status, dtmcli.ErrFailure), true
}

// guardResubmit puts resubmit in front of DTM's HTTP submit route.
func guardResubmit(c *gin.Context) {
	if c.Request.Method != http.MethodPost || c.Request.URL.Path != "/api/dtmsvr/submit" {
		return
	}
	body, err := io.ReadAll(c.Request.Body)
	if err != nil {
		return
	}
	c.Request.Body = io.NopCloser(bytes.NewReader(body))
	var req struct {
		Gid       string `json:"gid"`
		TransType string `json:"trans_type"`
	}
	if json.Unmarshal(body, &req) != nil || req.Gid == "" {
		return
	}
	r, handled := resubmit(c.Request.Context(), req.Gid, req.TransType)
	if !handled {
		return
	}
	dtmutil.WrapHandler2(func(*gin.Context) any { return r })(c)
	c.Abort()
}

func (s *grpcServer) Prepare(ctx context.Context, in *dtmgpb.DtmRequest) (*emptypb.Empty, error) {
	r := s.retry.do(ctx, "Prepare", in.Gid, func() any {
		return svcPrepare(dtmsvr.TransFromDtmRequest(ctx, in))
	}, always)
	return &emptypb.Empty{}, dtmgrpc.DtmError2GrpcError(r)
}

func (s *grpcServer) Abort(ctx context.Context, in *dtmgpb.DtmRequest) (*emptypb.Empty, error) {
	r := s.retry.do(ctx, "Abort", in.Gid, func() any {
		return svcAbort(dtmsvr.TransFromDtmRequest(ctx, in))
	}, always)
	return &emptypb.Empty{}, dtmgrpc.DtmError2GrpcError(r)
}

func (s *grpcServer) RegisterBranch(ctx context.Context, in *dtmgpb.DtmBranchRequest) (*emptypb.Empty, error) {
	r := s.retry.do(ctx, "RegisterBranch", in.Gid, func() any {
		return svcRegisterBranch(in.TransType, &dtmsvr.TransBranch{
			Gid:      in.Gid,
			BranchID: in.BranchID,
			Status:   dtmcli.StatusPrepared,
			BinData:  in.BusiPayload,
		}, in.Data)
	}, always)
	return &emptypb.Empty{}, dtmgrpc.DtmError2GrpcError(r)
}

func (s *grpcServer) PrepareWorkflow(ctx context.Context, in *dtmgpb.DtmRequest) (*dtmgpb.DtmProgressesReply, error) {
	type result struct {
		trans    *storage.TransGlobalStore
		branches []dtmsvr.TransBranch
		err      error
	}
	r := s.retry.do(ctx, "PrepareWorkflow", in.Gid, func() any {
		var res result
		res.trans, res.branches, res.err = svcPrepareWorkflow(dtmsvr.TransFromDtmRequest(ctx, in))
		if res.err != nil {
			return res.err
		}
		return res
	}, always)
	if err, ok := r.(error); ok {
		return nil, dtmgrpc.DtmError2GrpcError(err)
	}
	res := r.(result)
	reply := &dtmgpb.DtmProgressesReply{
		Transaction: &dtmgpb.DtmTransaction{
			Gid:            res.trans.Gid,
			Status:         res.trans.Status,
			RollbackReason: res.trans.RollbackReason,
		},
		Progresses: []*dtmgpb.DtmProgress{},
	}
	for _, b := range res.branches {
		reply.Progresses = append(reply.Progresses, &dtmgpb.DtmProgress{
			Status:   b.Status,
			BranchID: b.BranchID,
			Op:       b.Op,
			BinData:  b.BinData,
		})
	}
	return reply, nil
}

func (s *grpcServer) Subscribe(ctx context.Context, in *dtmgpb.DtmTopicRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, dtmgrpc.DtmError2GrpcError(dtmsvr.Subscribe(in.Topic, in.URL, in.Remark))
}

func (s *grpcServer) Unsubscribe(ctx context.Context, in *dtmgpb.DtmTopicRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, dtmgrpc.DtmError2GrpcError(dtmsvr.Unsubscribe(in.Topic, in.URL))
}

func (s *grpcServer) DeleteTopic(ctx context.Context, in *dtmgpb.DtmTopicRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, dtmgrpc.DtmError2GrpcError(dtmsvr.GetStore().DeleteKV(topicsCat, in.Topic))
}

func always() bool { return true }

// notYetSubmitted reports whether the store holds gid as prepared or not at
// all, i.e. whether a failed Submit changed nothing.
func notYetSubmitted(gid string) (ok bool) {
	defer func() {
		if recover() != nil { // DTM's store panics on errors
			ok = false
		}
	}()
	g := dtmsvr.GetStore().FindTransGlobalStore(gid)
	return g == nil || g.Status == dtmcli.StatusPrepared
}
