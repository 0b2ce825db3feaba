package claimbench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencoupon/coupon/internal/bench/claimbench"
	"github.com/opencoupon/coupon/internal/coupontest"
)

// flags point the bench at srv with tiny scenarios.
func flags(srv *coupontest.Server, extra ...string) []string {
	my := srv.Config.MySQL
	return append([]string{
		"--addr", srv.Addr, "--pid", strconv.Itoa(os.Getpid()),
		"--mysql-main", my.MainDSN, "--mysql-shards", strings.Join(my.ShardDSNs, ","),
		"--tables-per-shard", strconv.Itoa(my.TablesPerShard),
		"--redis", srv.Config.Redis.Addrs[0], "--redis-prefix", srv.Prefix, "--bench-prefix", srv.Prefix + "bench:",
		"--duration", "300ms", "--warmup", "100ms", "--settle", "300ms", "--concurrency", "8", "--conns", "2",
		"--templates", "4", "--stock", "100000", "--soldout-stock", "50", "--soldout-attempts", "400",
		"--get-templates", "2", "--list-users", "20", "--list-coupons", "3",
		"--retries", "0.2", "--bursts", "0.2", "--baseline-pool", "4",
	}, extra...)
}

func TestMainRunsEveryScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("needs MariaDB and Redis")
	}
	srv := coupontest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := claimbench.Main(ctx, flags(srv), &out); err != nil {
		t.Fatalf("Main: %v\n%s", err, out.String())
	}
	t.Logf("output:\n%s", out.String())
	for _, want := range []string{
		"claim    scenario=many ", "claim    scenario=hot ", "claim    scenario=soldout ",
		"read     scenario=get ", "read     scenario=list ", "baseline scenario=baseline ",
		"verify   scenario=many ", "verify   scenario=hot ", "verify   scenario=soldout ", "verify   scenario=list ",
		"ratio hot/baseline=", "ratio get/health=", "ratio soldout/health=", "rss_peak=",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if !strings.Contains(out.String(), "issued=50 taken=50 ") {
		t.Errorf("sold-out storm did not issue exactly its stock of 50")
	}

	// The baseline's scratch tables and key are gone.
	_, shards := srv.App.Store().DBsForTest()
	for i, db := range shards {
		var n int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.tables
 WHERE table_schema = DATABASE() AND table_name LIKE 'bench\_baseline\_%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("shard %d: %d bench_baseline tables left behind", i, n)
		}
	}
	keys, err := srv.App.Redis().Keys(ctx, srv.Prefix+"bench:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 0 {
		t.Errorf("baseline keys left behind: %v", keys)
	}
}

func TestMainJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("needs MariaDB and Redis")
	}
	srv := coupontest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := claimbench.Main(ctx, flags(srv, "--scenarios", "hot,get", "--json"), &out); err != nil {
		t.Fatalf("Main: %v\n%s", err, out.String())
	}
	var rep claimbench.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("decode report: %v\n%s", err, out.String())
	}
	if len(rep.Scenarios) != 2 || rep.Scenarios[0].Scenario != "hot" || rep.Scenarios[1].Scenario != "get" {
		t.Fatalf("scenarios = %+v, want hot and get", rep.Scenarios)
	}
	if hot := rep.Scenarios[0]; hot.OK == 0 || hot.P99ms <= 0 || hot.RSSPeakMB <= 0 {
		t.Errorf("hot = %+v, want claims, latencies and an RSS", hot)
	}
	if len(rep.Verified) != 1 || rep.Verified[0].Issued == 0 || rep.Verified[0].Issued != rep.Verified[0].Taken {
		t.Errorf("verified = %+v, want the hot template's issued = taken > 0", rep.Verified)
	}
}

// TestMainFailsOnOversell gives the sold-out template five units that no
// claim took from its stock, as a double-counting bug would: the run must fail.
func TestMainFailsOnOversell(t *testing.T) {
	if testing.Short() {
		t.Skip("needs MariaDB and Redis")
	}
	srv := coupontest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rdb := srv.App.Redis()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			keys, _ := rdb.Keys(ctx, srv.Prefix+"stock:*").Result()
			if len(keys) > 0 {
				rdb.HIncrBy(ctx, keys[0], "n", 5)
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	var out bytes.Buffer
	err := claimbench.Main(ctx, flags(srv, "--scenarios", "soldout"), &out)
	<-done
	if err == nil || !strings.Contains(err.Error(), "verification failed") {
		t.Fatalf("Main = %v, want a verification failure\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "VIOLATION soldout: template") {
		t.Errorf("output names no stock violation:\n%s", out.String())
	}
}
