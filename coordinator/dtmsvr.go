package coordinator

import (
	"context"
	_ "unsafe" // go:linkname

	"github.com/dtm-labs/dtm/client/dtmcli"
	"github.com/dtm-labs/dtm/client/dtmgrpc"
	"github.com/dtm-labs/dtm/client/dtmgrpc/dtmgpb"
	"github.com/dtm-labs/dtm/dtmsvr"
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

// grpcServer is the part of DTM's gRPC API (dtmsvr's dtmServer) the project
// uses, with transient store errors retried where that is safe. Workflows
// and topics are not served: their methods answer Unimplemented.
type grpcServer struct {
	dtmgpb.UnimplementedDtmServer
	retry retrier
}

var _ dtmgpb.DtmServer = (*grpcServer)(nil)

func (s *grpcServer) NewGid(ctx context.Context, in *emptypb.Empty) (*dtmgpb.DtmGidReply, error) {
	return &dtmgpb.DtmGidReply{Gid: dtmsvr.GenGid()}, nil
}

// Submit goes through guardSubmit; it is retried only while the
// transaction is still prepared (or absent).
func (s *grpcServer) Submit(ctx context.Context, in *dtmgpb.DtmRequest) (*emptypb.Empty, error) {
	r := s.retry.do(ctx, "Submit", in.Gid, func() any {
		if r, pass := guardSubmit(ctx, in.Gid, in.TransType); !pass {
			return r
		}
		return svcSubmit(dtmsvr.TransFromDtmRequest(ctx, in))
	}, func() bool { return notYetSubmitted(in.Gid) })
	if ref, ok := r.(*refusal); ok {
		return nil, ref.grpcStatus()
	}
	return &emptypb.Empty{}, dtmgrpc.DtmError2GrpcError(r)
}

func (s *grpcServer) Prepare(ctx context.Context, in *dtmgpb.DtmRequest) (*emptypb.Empty, error) {
	if !servedTypes[in.TransType] {
		return nil, refuseType(in.TransType).grpcStatus()
	}
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
