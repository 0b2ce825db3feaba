package config_test

import (
	"fmt"

	"github.com/opencoupon/coupon/internal/config"
)

// Each key names its environment variable and default in one place.
func ExampleKeys() {
	for _, k := range config.Keys() {
		if k.Name == "claim.write_timeout" || k.Name == "redis.addrs" {
			fmt.Println(k.Name, k.Env(), k.Default)
		}
	}
	// Output:
	// redis.addrs COUPON_REDIS_ADDRS [127.0.0.1:6379]
	// claim.write_timeout COUPON_CLAIM_WRITE_TIMEOUT 2s
}
