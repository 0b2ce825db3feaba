package dtmtest_test

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/dtm-labs/client/dtmgrpc"
	dtmlogger "github.com/dtm-labs/logger"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/opencoupon/coupon/internal/dtmquery"
	"github.com/opencoupon/coupon/internal/dtmtest"
	"github.com/opencoupon/coupon/internal/testenv"
)

// finishTimeout bounds how long a coordinator may take to finish a
// transaction, recovery included (retry_interval is 3s under dtmtest).
const finishTimeout = 60 * time.Second

func TestMain(m *testing.M) {
	dtmlogger.InitLog("warn") // the DTM client logs every call at info
	os.Exit(m.Run())
}

func TestTCCSucceeds(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts []dtmtest.Option
	}{
		{"mysql store", nil},
		{"redis store", []dtmtest.Option{dtmtest.RedisStore()}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dtmtest.Start(t, tt.opts...)
			p := startParticipant(t)

			gid := testenv.Unique(t)
			if err := p.tcc(c.GRPCAddr, gid); err != nil {
				t.Fatalf("TCC via %s: %v", c.GRPCAddr, err)
			}
			waitStatus(t, c, gid, "succeed")
			p.wantLedger(t, gid, map[string]int{"try": 1, "confirm": 1})
		})
	}
}

func TestTwinsShareTheStore(t *testing.T) {
	a := dtmtest.Start(t)
	b := a.StartTwin()
	p := startParticipant(t)

	for _, via := range []*dtmtest.Coordinator{a, b} {
		gid := testenv.Unique(t)
		if err := p.tcc(via.GRPCAddr, gid); err != nil {
			t.Fatalf("TCC via %s: %v", via.GRPCAddr, err)
		}
		// Each sees the other's transactions.
		for _, c := range []*dtmtest.Coordinator{a, b} {
			waitStatus(t, c, gid, "succeed")
		}
		p.wantLedger(t, gid, map[string]int{"try": 1, "confirm": 1})
	}
}

// TestCrashDuringConfirm kills a coordinator while it waits on a Confirm
// branch; the transaction is then finished by its twin, or by itself once
// restarted.
func TestCrashDuringConfirm(t *testing.T) {
	for _, tt := range []struct {
		name    string
		recover func(crashed *dtmtest.Coordinator) *dtmtest.Coordinator
	}{
		{"twin finishes", func(crashed *dtmtest.Coordinator) *dtmtest.Coordinator {
			return crashed.StartTwin()
		}},
		{"restart finishes", func(crashed *dtmtest.Coordinator) *dtmtest.Coordinator {
			crashed.Restart()
			return crashed
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dtmtest.Start(t)
			p := startParticipant(t)
			gate := p.holdNextConfirm()

			gid := testenv.Unique(t)
			if err := p.tcc(c.GRPCAddr, gid); err != nil {
				t.Fatalf("TCC via %s: %v", c.GRPCAddr, err)
			}
			select {
			case <-gate.entered:
			case <-time.After(finishTimeout):
				t.Fatal("the coordinator never called Confirm")
			}
			c.Kill()
			close(gate.release) // the held Confirm fails without effect

			survivor := tt.recover(c)
			waitStatus(t, survivor, gid, "succeed")
			p.wantLedger(t, gid, map[string]int{"try": 1, "confirm": 1})
			if n := p.confirmCalls(gid); n < 2 {
				t.Errorf("Confirm called %d times, want at least 2 (one before the crash, one after)", n)
			}
		})
	}
}

// participant is a TCC participant served over gRPC in the test, guarding
// its ledger with DTM's barrier.
type participant struct {
	addr    string
	db      *sql.DB
	barrier string

	mu       sync.Mutex
	gate     *gate
	confirms map[string]int
}

// gate holds one Confirm call: entered is closed when it arrives, and it
// fails once release is closed.
type gate struct {
	entered, release chan struct{}
}

func startParticipant(t *testing.T) *participant {
	t.Helper()
	name := testenv.Unique(t)
	db, err := sql.Open("mysql", testenv.MustDatabase(t, name))
	if err != nil {
		t.Fatalf("open participant database: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	db.SetMaxOpenConns(5)
	for _, ddl := range []string{
		`CREATE TABLE barrier (
		  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
		  trans_type VARCHAR(45) DEFAULT '',
		  gid VARCHAR(128) DEFAULT '',
		  branch_id VARCHAR(128) DEFAULT '',
		  op VARCHAR(45) DEFAULT '',
		  barrier_id VARCHAR(45) DEFAULT '',
		  reason VARCHAR(45) DEFAULT '',
		  create_time DATETIME DEFAULT NOW(),
		  update_time DATETIME DEFAULT NOW(),
		  UNIQUE KEY (gid, branch_id, op, barrier_id)
		) ENGINE=InnoDB`,
		`CREATE TABLE ledger (
		  gid VARCHAR(128) NOT NULL,
		  op VARCHAR(16) NOT NULL,
		  PRIMARY KEY (gid, op)
		) ENGINE=InnoDB`,
	} {
		if _, err := db.Exec(ddl); err != nil {
			t.Fatalf("create participant tables: %v", err)
		}
	}

	p := &participant{db: db, barrier: name + ".barrier", confirms: map[string]int{}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	p.addr = lis.Addr().String()
	srv := grpc.NewServer()
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "dtmtest.Participant",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{
			{MethodName: "Try", Handler: p.handler("try")},
			{MethodName: "Confirm", Handler: p.handler("confirm")},
			{MethodName: "Cancel", Handler: p.handler("cancel")},
		},
	}, p)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return p
}

// tcc runs a global TCC transaction with one branch of p through the
// coordinator at dtm.
func (p *participant) tcc(dtm, gid string) error {
	url := func(method string) string { return p.addr + "/dtmtest.Participant/" + method }
	return dtmgrpc.TccGlobalTransaction(dtm, gid, func(tcc *dtmgrpc.TccGrpc) error {
		return tcc.CallBranch(wrapperspb.String(gid), url("Try"), url("Confirm"), url("Cancel"), &emptypb.Empty{})
	})
}

// holdNextConfirm makes the next Confirm call wait for the returned gate.
func (p *participant) holdNextConfirm() *gate {
	g := &gate{entered: make(chan struct{}), release: make(chan struct{})}
	p.mu.Lock()
	p.gate = g
	p.mu.Unlock()
	return g
}

func (p *participant) confirmCalls(gid string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.confirms[gid]
}

func (p *participant) handler(op string) grpc.MethodHandler {
	return func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		var in wrapperspb.StringValue
		if err := dec(&in); err != nil {
			return nil, err
		}
		if op == "confirm" {
			p.mu.Lock()
			p.confirms[in.Value]++
			g := p.gate
			p.gate = nil
			p.mu.Unlock()
			if g != nil {
				close(g.entered)
				<-g.release
				return nil, status.Error(codes.Unavailable, "held until the coordinator crashed")
			}
		}
		bb, err := dtmgrpc.BarrierFromGrpc(ctx)
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		bb.BarrierTableName = p.barrier
		err = bb.CallWithDB(p.db, func(tx *sql.Tx) error {
			_, err := tx.Exec("INSERT INTO ledger (gid, op) VALUES (?, ?)", bb.Gid, op)
			return err
		})
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		return &emptypb.Empty{}, nil
	}
}

// wantLedger checks which operations took effect for gid, once each.
func (p *participant) wantLedger(t *testing.T, gid string, want map[string]int) {
	t.Helper()
	rows, err := p.db.Query("SELECT op, COUNT(*) FROM ledger WHERE gid = ? GROUP BY op", gid)
	if err != nil {
		t.Fatalf("read ledger: %v", err)
	}
	defer rows.Close()
	got := map[string]int{}
	for rows.Next() {
		var op string
		var n int
		if err := rows.Scan(&op, &n); err != nil {
			t.Fatalf("read ledger: %v", err)
		}
		got[op] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read ledger: %v", err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("ledger of %s = %v, want %v", gid, got, want)
	}
}

// waitStatus polls c's query API until gid has the given status.
func waitStatus(t *testing.T, c *dtmtest.Coordinator, gid, want string) {
	t.Helper()
	q := dtmquery.Client{Addr: c.HTTPAddr, HTTP: &http.Client{Timeout: 2 * time.Second}}
	deadline := time.Now().Add(finishTimeout)
	for {
		got, _, err := q.Status(context.Background(), gid)
		if err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("transaction %s: status %q, error %v after %s; want %s", gid, got, err, finishTimeout, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
