package main

import (
	"reflect"
	"testing"
	"time"

	"github.com/opencoupon/coupon/coordinator"
)

// TestLocalConfig checks that deploy/local/coordinator.yaml spells out the
// defaults, and that the environment overrides it.
func TestLocalConfig(t *testing.T) {
	t.Setenv("COUPON_COORDINATOR_STORE_HOST", "db.internal")
	t.Setenv("COUPON_COORDINATOR_CRON_INTERVAL", "500ms")
	v, err := loadConfig("../../deploy/local/coordinator.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got, err := config(v)
	if err != nil {
		t.Fatal(err)
	}
	want := coordinator.DefaultConfig()
	want.Store.Host = "db.internal"
	want.CronInterval = 500 * time.Millisecond
	if !reflect.DeepEqual(got, want) {
		t.Errorf("config =\n%+v\nwant\n%+v", got, want)
	}
}
