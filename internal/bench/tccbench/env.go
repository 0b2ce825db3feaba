package tccbench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dtm-labs/client/dtmgrpc/dtmgimp"
	"github.com/dtm-labs/client/dtmgrpc/dtmgpb"
	"github.com/go-sql-driver/mysql"
	goredis "github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/opencoupon/coupon/examples/shop"
	shopv1 "github.com/opencoupon/coupon/examples/shop/proto/shop/v1"
	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/auth"
	"github.com/opencoupon/coupon/internal/bench/rediskeys"
	"github.com/opencoupon/coupon/participant"
	couponmysql "github.com/opencoupon/coupon/participant/mysql"
)

// Database roles of the bench, each database named prefix_role.
const (
	dbMain     = "main"
	dbShard0   = "s0"
	dbShard1   = "s1"
	dbPayment  = "payment"
	dbTextbook = "textbook"
)

var dbRoles = []string{dbMain, dbShard0, dbShard1, dbPayment, dbTextbook}

// tablesPerShard is the production layout (deploy/local/coupon.yaml).
const tablesPerShard = 8

// bench is everything a run needs: the in-process participants, their
// databases and the scenarios prepared on them.
type bench struct {
	o   options
	log *slog.Logger
	// runID starts every gid and order number of this run.
	runID string

	coupon     *app.App
	couponAddr string
	couponConn *grpc.ClientConn
	// couponShards are the bench's own pools on the coupon shard
	// databases, to seed coupons and read them back (the service's pools
	// stay inside its stores).
	couponShards []*sql.DB
	paymentDB    *sql.DB
	paymentURL   string // gRPC target of the payment service
	textbookDB   *sql.DB
	textURL      string // gRPC target of the textbook participant

	scenarios []*scenario
	stops     []func() // run in reverse by close
}

// scenario is one kind of global transaction over n prepared items, each
// item used by exactly one transaction.
type scenario struct {
	name string
	// short goes into gids.
	short string
	n     int
	// tx runs the global transaction of item i.
	tx func(ctx context.Context, gid string, i int) error
	// settled returns a test of whether item i's transaction has all its
	// effects (every Confirm done).
	settled func(ctx context.Context) (func(i int) bool, error)
}

func (b *bench) dsn(role string) string {
	return b.o.mysql + b.o.prefix + "_" + role + "?parseTime=true&loc=UTC&interpolateParams=true"
}

func (b *bench) redisPrefix() string { return b.o.prefix + ":" }

// items is how many transactions a scenario prepares for, over all rounds.
func (b *bench) items() int {
	d := time.Duration(b.o.rounds)*b.o.warmup + b.o.duration
	return int(d.Seconds()*float64(b.o.maxRate)) + b.o.rounds*b.o.concurrency
}

// setup drops what an earlier run left, then starts the participants the
// scenarios need and prepares their data.
func setup(ctx context.Context, o options, log *slog.Logger) (_ *bench, err error) {
	b := &bench{o: o, log: log, runID: "b" + strconv.FormatInt(time.Now().UnixMilli(), 36)}
	defer func() {
		if err != nil {
			if cerr := b.close(context.WithoutCancel(ctx)); cerr != nil {
				log.Warn("clean up after failed setup", "err", cerr)
			}
		}
	}()
	if err := b.pingCoordinator(ctx); err != nil {
		return nil, err
	}
	if err := b.dropAll(ctx); err != nil {
		return nil, err
	}
	need := func(s string) bool { return slices.Contains(o.scenarios, s) }
	if need(ScenarioCoupon) || need(ScenarioCouponPayment) {
		if err := b.startCoupon(ctx); err != nil {
			return nil, err
		}
	}
	if need(ScenarioCouponPayment) {
		if err := b.startPayment(ctx); err != nil {
			return nil, err
		}
	}
	if need(ScenarioTextbook) {
		if err := b.startTextbook(ctx); err != nil {
			return nil, err
		}
	}
	for k, name := range o.scenarios {
		// Every transaction has a user of its own: the risk rule allows a
		// user 3 coupon uses a day.
		base := int64(k+1) * 100_000_000
		var sc *scenario
		switch name {
		case ScenarioCoupon:
			sc, err = b.couponScenario(ctx, name, "c", base, false)
		case ScenarioCouponPayment:
			sc, err = b.couponScenario(ctx, name, "cp", base, true)
		case ScenarioTextbook:
			sc, err = b.textbookScenario(ctx, name, "t", base)
		}
		if err != nil {
			return nil, fmt.Errorf("prepare %s: %w", name, err)
		}
		b.scenarios = append(b.scenarios, sc)
	}
	return b, nil
}

// pingCoordinator asks the coordinator for a gid, so that a wrong --dtm
// fails at once rather than as one error per transaction.
func (b *bench) pingCoordinator(ctx context.Context) error {
	conn, err := dtmgimp.GetGrpcConn(b.o.dtm, false)
	if err != nil {
		return fmt.Errorf("dial coordinator %s: %w", b.o.dtm, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := dtmgpb.NewDtmClient(conn).NewGid(ctx, &emptypb.Empty{}, grpc.WaitForReady(true)); err != nil {
		return fmt.Errorf("coordinator %s does not answer: %w", b.o.dtm, err)
	}
	return nil
}

// close stops the participants and, unless --keep, drops the databases and
// Redis keys.
func (b *bench) close(ctx context.Context) error {
	for i := len(b.stops) - 1; i >= 0; i-- {
		b.stops[i]()
	}
	b.stops = nil
	if b.o.keep {
		return nil
	}
	return b.dropAll(ctx)
}

// dropAll drops the bench's databases and Redis keys.
func (b *bench) dropAll(ctx context.Context) error {
	root, err := sql.Open("mysql", b.o.mysql)
	if err != nil {
		return fmt.Errorf("open mysql %s: %w", b.o.mysql, err)
	}
	defer root.Close()
	var errs []error
	for _, role := range dbRoles {
		if _, err := root.ExecContext(ctx, "DROP DATABASE IF EXISTS `"+b.o.prefix+"_"+role+"`"); err != nil {
			errs = append(errs, fmt.Errorf("drop database %s_%s: %w", b.o.prefix, role, err))
		}
	}
	rdb := goredis.NewClient(&goredis.Options{Addr: b.o.redis})
	defer rdb.Close()
	if err := rediskeys.Delete(ctx, rdb, b.redisPrefix()); err != nil {
		errs = append(errs, fmt.Errorf("delete redis keys %s*: %w", b.redisPrefix(), err))
	}
	return errors.Join(errs...)
}

// createDatabase creates the database of role, empty.
func (b *bench) createDatabase(ctx context.Context, role string) error {
	root, err := sql.Open("mysql", b.o.mysql)
	if err != nil {
		return fmt.Errorf("open mysql: %w", err)
	}
	defer root.Close()
	if _, err := root.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS `"+b.o.prefix+"_"+role+"` CHARACTER SET utf8mb4"); err != nil {
		return fmt.Errorf("create database %s_%s: %w", b.o.prefix, role, err)
	}
	return nil
}

// openDB opens a pool of --conns connections on the database of role.
func (b *bench) openDB(ctx context.Context, role string) (*sql.DB, error) {
	c, err := mysql.ParseDSN(b.dsn(role))
	if err != nil {
		return nil, fmt.Errorf("parse dsn: %w", err)
	}
	c.Timeout = 3 * time.Second
	conn, err := mysql.NewConnector(c)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(b.o.conns)
	db.SetMaxIdleConns(b.o.conns)
	db.SetConnMaxLifetime(time.Hour)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("ping %s_%s: %w", b.o.prefix, role, err)
	}
	return db, nil
}

// serve serves gs on a free loopback port until close, and returns the
// address.
func (b *bench) serve(gs *grpc.Server) (string, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := gs.Serve(lis); err != nil {
			b.log.Error("grpc server stopped", "addr", lis.Addr().String(), "err", err)
		}
	}()
	b.stops = append(b.stops, func() {
		stopped := make(chan struct{})
		go func() { gs.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			gs.Stop()
		}
		<-done
	})
	return lis.Addr().String(), nil
}

// startCoupon migrates the coupon databases and serves the coupon service
// as cmd/coupon would, with the production rules (participant.DefaultConfig).
func (b *bench) startCoupon(ctx context.Context) error {
	cfg := app.Config{
		GRPCAddr: "127.0.0.1:0",
		NodeID:   1,
		Auth:     auth.Config{Enabled: true, Callers: auth.DevCallers()},
		MySQL: couponmysql.Config{
			MainDSN:        b.dsn(dbMain),
			ShardDSNs:      []string{b.dsn(dbShard0), b.dsn(dbShard1)},
			TablesPerShard: tablesPerShard,
			MaxOpenConns:   b.o.couponConns,
			MaxIdleConns:   b.o.couponConns,
		},
		Redis:   app.RedisConfig{Addrs: []string{b.o.redis}, Prefix: b.redisPrefix(), PoolSize: 16},
		Service: participant.DefaultConfig(),
	}
	if err := app.Migrate(ctx, cfg.MySQL); err != nil {
		return fmt.Errorf("migrate coupon databases: %w", err)
	}
	a, err := app.Open(ctx, cfg, b.log)
	if err != nil {
		return fmt.Errorf("open coupon service: %w", err)
	}
	lis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		a.Close()
		return err
	}
	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := a.ServeListeners(sctx, lis, nil); err != nil {
			b.log.Error("coupon service stopped", "err", err)
		}
	}()
	b.stops = append(b.stops, func() {
		stop()
		<-done
		a.Close()
	})
	b.coupon, b.couponAddr = a, lis.Addr().String()
	for _, role := range []string{dbShard0, dbShard1} {
		db, err := b.openDB(ctx, role)
		if err != nil {
			return err
		}
		b.stops = append(b.stops, func() { db.Close() })
		b.couponShards = append(b.couponShards, db)
	}
	conn, err := grpc.NewClient(b.couponAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(auth.DevTokens().Interceptor()))
	if err != nil {
		return err
	}
	b.couponConn = conn
	b.stops = append(b.stops, func() { conn.Close() })
	return nil
}

// startPayment migrates the payment database and serves the sample shop's
// payment service, the second branch of the shop's orders.
func (b *bench) startPayment(ctx context.Context) error {
	if err := shop.Migrate(ctx, b.dsn(dbPayment), shop.PaymentDB); err != nil {
		return err
	}
	db, err := b.openDB(ctx, dbPayment)
	if err != nil {
		return err
	}
	b.stops = append(b.stops, func() { db.Close() })
	b.paymentDB = db
	gs := grpc.NewServer(grpc.ChainUnaryInterceptor(shop.UnaryErrors(b.log)))
	shopv1.RegisterPaymentServiceServer(gs, shop.NewPaymentServer(db))
	b.paymentURL, err = b.serve(gs)
	return err
}

// insertRows inserts rows in multi-row INSERTs of up to 500 rows: head is
// "INSERT INTO t (a, b) VALUES", each row a []any of the columns.
func insertRows(ctx context.Context, db *sql.DB, head string, rows [][]any) error {
	for len(rows) > 0 {
		chunk := rows[:min(500, len(rows))]
		rows = rows[len(chunk):]
		var q strings.Builder
		q.WriteString(head)
		args := make([]any, 0, len(chunk)*len(chunk[0]))
		marks := "(" + strings.TrimSuffix(strings.Repeat("?,", len(chunk[0])), ",") + ")"
		for i, r := range chunk {
			if i > 0 {
				q.WriteByte(',')
			}
			q.WriteString(marks)
			args = append(args, r...)
		}
		if _, err := db.ExecContext(ctx, q.String(), args...); err != nil {
			return err
		}
	}
	return nil
}

// logPools logs how long transactions waited for a MySQL connection so far,
// per pool: a pool that makes them wait bounds the throughput.
func (b *bench) logPools(scenario string) {
	pools := map[string]sql.DBStats{}
	for name, db := range map[string]*sql.DB{dbPayment: b.paymentDB, dbTextbook: b.textbookDB} {
		if db != nil {
			pools[name] = db.Stats()
		}
	}
	if b.coupon != nil {
		for name, st := range b.coupon.Store().PoolStats() {
			pools[strings.Replace(name, "shard_", "s", 1)] = st // main, s0, s1
		}
	}
	for name, st := range pools {
		b.log.Info("mysql pool", "scenario", scenario, "db", name, "open", st.OpenConnections,
			"waits", st.WaitCount, "waited", st.WaitDuration.Round(time.Millisecond))
	}
}
