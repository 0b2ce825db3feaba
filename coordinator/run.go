package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dtm-labs/dtm/client/dtmcli"
	"github.com/dtm-labs/dtm/client/dtmgrpc"
	"github.com/dtm-labs/dtm/client/dtmgrpc/dtmgimp"
	"github.com/dtm-labs/dtm/client/dtmgrpc/dtmgpb"
	"github.com/dtm-labs/dtm/dtmsvr"
	"github.com/dtm-labs/dtm/dtmutil"
	"github.com/dtm-labs/dtmdriver"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

var running atomic.Bool

// Run configures DTM from cfg and serves its HTTP and gRPC APIs on
// cfg.HTTPAddr and cfg.GRPCAddr, with its cron and branch flushers, until
// ctx is done; then it stops gracefully within cfg.ShutdownTimeout. It may
// be called once per process (DTM's state is global).
//
// It does what dtmsvr.StartSvr and dtm's entry.Main do, on our listeners:
// DTM's batch flushers cannot be stopped and go on until the process exits;
// a transaction left half-processed by the stop is finished by a cron, here
// or in another coordinator sharing the store.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if !running.CompareAndSwap(false, true) {
		return errors.New("coordinator already ran in this process: dtm keeps global state")
	}
	if err := Configure(ctx, cfg, log); err != nil {
		return err
	}

	var lc net.ListenConfig
	httpLis, err := lc.Listen(ctx, "tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen http: %w", err)
	}
	grpcLis, err := lc.Listen(ctx, "tcp", cfg.GRPCAddr)
	if err != nil {
		httpLis.Close()
		return fmt.Errorf("listen grpc: %w", err)
	}

	setupClients(cfg)
	if err := dtmdriver.Use("default"); err != nil {
		httpLis.Close()
		grpcLis.Close()
		return fmt.Errorf("use dtm's default driver: %w", err)
	}
	setServerInfoMetrics()

	app := dtmutil.GetGinApp()
	app = httpMetrics(app)
	app.Use(guardHTTP(log))
	addRoute(app) // DTM's JSON-RPC router is not added: no part of the project uses it
	httpSrv := &http.Server{
		Handler:           app,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	grpcSrv := grpc.NewServer(grpc.ChainUnaryInterceptor(
		recoverUnary(log), logUnary(log), grpcMetrics))
	dtmgpb.RegisterDtmServer(grpcSrv, &grpcServer{retry: retrier{retries: cfg.TransientRetries, log: log}})
	reflection.Register(grpcSrv)

	// Load the topics before any worker runs: this also opens DTM's store
	// pool, which DTM's lazy, unlocked cache would otherwise open once per
	// concurrent first caller, leaking the extra pools.
	dtmsvr.CronUpdateTopicsMapOnce()
	if cfg.Store.Driver == MySQL && !cfg.UpdateBranchSync {
		for range cfg.BranchFlushers {
			go updateBranchAsync()
		}
	}

	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	var workers sync.WaitGroup
	for range cfg.CronWorkers {
		workers.Go(func() { cron(workCtx, cfg.CronInterval) })
	}
	workers.Go(func() { every(workCtx, 3*time.Second, dtmsvr.CronUpdateTopicsMapOnce) })

	serveErr := make(chan error, 2)
	go func() { serveErr <- fmt.Errorf("serve http: %w", httpSrv.Serve(httpLis)) }()
	go func() { serveErr <- fmt.Errorf("serve grpc: %w", grpcSrv.Serve(grpcLis)) }()
	log.Info("coordinator serving", "http", httpLis.Addr().String(), "grpc", grpcLis.Addr().String(),
		"store", cfg.Store.Driver)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-serveErr:
	}

	stopCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	stopped := make(chan struct{})
	go func() {
		grpcSrv.GracefulStop()
		close(stopped)
	}()
	if err := httpSrv.Shutdown(stopCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		log.Warn("stop http", "err", err)
	}
	select {
	case <-stopped:
	case <-stopCtx.Done():
		grpcSrv.Stop()
	}
	stopWork()
	workersDone := make(chan struct{})
	go func() {
		workers.Wait()
		close(workersDone)
	}()
	select {
	case <-workersDone:
	case <-stopCtx.Done():
		log.Warn("stopping with a cron pass unfinished; another pass will redo it")
	}
	if cfg.Store.Driver == MySQL && !cfg.UpdateBranchSync {
		// Give the flushers a batch interval to write the last results;
		// any lost are redone by a cron (see DefaultConfig).
		sleep(stopCtx, 2*dtmsvr.UpdateBranchAsyncInterval)
	}
	log.Info("coordinator stopped")
	return runErr
}

// setupClients sets the timeout of DTM's calls to branches, as StartSvr does.
func setupClients(cfg Config) {
	dtmcli.GetRestyClient().SetTimeout(cfg.RequestTimeout)
	dtmgrpc.AddUnaryInterceptor(func(ctx context.Context, method string, req, reply any,
		cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		timeout := cfg.RequestTimeout
		if v := dtmgimp.RequestTimeoutFromContext(ctx); v != 0 {
			timeout = time.Duration(v) * time.Second
		}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return invoker(ctx, method, req, reply, cc, opts...)
	})
}

// cron processes due transactions, one at a time, until ctx is done; it
// waits about interval (with jitter, so coordinators spread out) whenever
// none is due.
func cron(ctx context.Context, interval time.Duration) {
	for ctx.Err() == nil {
		if gid := dtmsvr.CronTransOnce(); gid != "" {
			continue
		}
		if !sleep(ctx, interval/2+rand.N(interval/2+1)) {
			return
		}
	}
}

func every(ctx context.Context, interval time.Duration, f func()) {
	for sleep(ctx, interval) {
		f()
	}
}

// sleep waits for d, reporting false if ctx is done first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// recoverUnary turns a panic (DTM's store panics on errors) into Internal,
// as dtmsvr's interceptor does, and logs it.
func recoverUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (res any, err error) {
		defer func() {
			if x := recover(); x != nil {
				log.Error("dtm api panicked", "method", info.FullMethod, "panic", redactText(fmt.Sprint(x)))
				err = status.Errorf(codes.Internal, "%v", x)
			}
		}()
		return handler(ctx, req)
	}
}

// logUnary logs failed calls. Aborted (the transaction failed) and
// FailedPrecondition (still ongoing) are outcomes, not errors.
func logUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		res, err := handler(ctx, req)
		if err != nil {
			level := slog.LevelError
			if c := status.Code(err); c == codes.Aborted || c == codes.FailedPrecondition {
				level = slog.LevelDebug
			}
			log.Log(ctx, level, "dtm api call failed", "method", info.FullMethod, "err", redactText(err.Error()))
		}
		return res, err
	}
}
