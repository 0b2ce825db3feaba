package main

import (
	"github.com/opencoupon/coupon/internal/app"
	"github.com/opencoupon/coupon/internal/config"
)

// loadConfig reads the server's configuration: the optional YAML file and
// COUPON_* environment overrides (key grpc.addr ← COUPON_GRPC_ADDR), as
// described in internal/config and docs/configuration.md. It returns the
// log level beside it.
func loadConfig(file string) (app.Config, string, error) {
	c, err := config.Load(file)
	if err != nil {
		return app.Config{}, "", err
	}
	return c.App, c.LogLevel, nil
}
