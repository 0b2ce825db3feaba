// Package testenv gives integration tests their own databases and Redis key
// prefix on the real local MariaDB and Redis, and removes them afterwards.
//
// COUPON_TEST_MYSQL (default "root@tcp(127.0.0.1:3306)/") and COUPON_TEST_REDIS
// (default "127.0.0.1:6379") point tests at other servers.
package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql" // driver
	"github.com/redis/go-redis/v9"
)

// MySQLServer is the DSN of the test server without a database name.
func MySQLServer() string {
	if v := os.Getenv("COUPON_TEST_MYSQL"); v != "" {
		return v
	}
	return "root@tcp(127.0.0.1:3306)/"
}

// RedisAddr is the address of the test Redis.
func RedisAddr() string {
	if v := os.Getenv("COUPON_TEST_REDIS"); v != "" {
		return v
	}
	return "127.0.0.1:6379"
}

// DSN returns the DSN of database name on the test server, with the
// parameters the service uses.
func DSN(name string) string {
	return MySQLServer() + name + "?parseTime=true&loc=UTC&interpolateParams=true"
}

// Unique returns a short name that is unique to this run, e.g. "ct3f9a1c".
func Unique(tb testing.TB) string {
	tb.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		tb.Fatalf("random name: %v", err)
	}
	return "ct" + hex.EncodeToString(b)
}

// MustDatabase creates an empty database called name and drops it when the
// test ends. It returns the database's DSN.
func MustDatabase(tb testing.TB, name string) string {
	tb.Helper()
	root, err := sql.Open("mysql", MySQLServer())
	if err != nil {
		tb.Fatalf("open mysql: %v", err)
	}
	defer root.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := root.ExecContext(ctx, "DROP DATABASE IF EXISTS `"+name+"`"); err != nil {
		tb.Fatalf("drop database %s: %v (is MariaDB running? make deps)", name, err)
	}
	if _, err := root.ExecContext(ctx, "CREATE DATABASE `"+name+"` CHARACTER SET utf8mb4"); err != nil {
		tb.Fatalf("create database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		if os.Getenv("COUPON_TEST_KEEP") != "" {
			return
		}
		db, err := sql.Open("mysql", MySQLServer())
		if err != nil {
			return
		}
		defer db.Close()
		_, _ = db.Exec("DROP DATABASE IF EXISTS `" + name + "`")
	})
	return DSN(name)
}

// MustRedis returns a client of the test Redis. Keys under prefix are
// deleted when the test ends; the test must use only keys under prefix.
func MustRedis(tb testing.TB, prefix string) *redis.Client {
	tb.Helper()
	if !strings.HasSuffix(prefix, ":") {
		tb.Fatalf("redis prefix %q must end with ':'", prefix)
	}
	rdb := redis.NewClient(&redis.Options{Addr: RedisAddr(), PoolSize: 64})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		tb.Fatalf("ping redis %s: %v (is Redis running? make deps)", RedisAddr(), err)
	}
	DeleteKeys(tb, rdb, prefix)
	tb.Cleanup(func() {
		DeleteKeys(tb, rdb, prefix)
		_ = rdb.Close()
	})
	return rdb
}

// DeleteKeys removes every key under prefix (never the whole database: the
// Redis may be shared). Tests use it to simulate Redis losing its data.
func DeleteKeys(tb testing.TB, rdb redis.UniversalClient, prefix string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	del := func(ctx context.Context, c *redis.Client) error {
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		var batch []string
		for iter.Next(ctx) {
			batch = append(batch, iter.Val())
			if len(batch) == 500 {
				for _, k := range batch {
					if err := c.Del(ctx, k).Err(); err != nil {
						return err
					}
				}
				batch = batch[:0]
			}
		}
		for _, k := range batch {
			if err := c.Del(ctx, k).Err(); err != nil {
				return err
			}
		}
		return iter.Err()
	}
	var err error
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, del)
	case *redis.Client:
		err = del(ctx, c)
	default:
		err = fmt.Errorf("unsupported redis client %T", rdb)
	}
	if err != nil {
		tb.Errorf("delete redis keys %s*: %v", prefix, err)
	}
}

// Eventually polls cond every 10ms until it is true or timeout passes, and
// fails the test with msg then.
func Eventually(tb testing.TB, timeout time.Duration, msg string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s: %s", timeout, msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
