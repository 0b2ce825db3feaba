// Command couponlab is the coupon lab: the tools that exercise a coupon
// stack rather than serve one. The server, cmd/coupon, links none of this.
//
//	couponlab chaos run [flags]   break a stack of its own and check that no money or stock is lost
//	couponlab bench NAME [flags]  run a benchmark (see internal/bench)
//	couponlab demo [--addr ADDR]  run the scripted demo against a running service
package main

import (
	"github.com/opencoupon/coupon/internal/cli"

	_ "github.com/opencoupon/coupon/internal/dtmlevel" // before the DTM logger reads LOG_LEVEL
)

// commands maps a subcommand's name to it.
var commands = map[string]cli.Command{
	"chaos": {Usage: "chaos   run [flags]     break a stack of its own on purpose and check that no money or stock is lost", Run: chaosCmd},
	"bench": {Usage: "bench   NAME [flags]    run a benchmark (make bench runs them)", Run: bench},
	"demo":  {Usage: "demo    --addr ADDR     run the scripted demo against a running service", Run: demo},
}

func main() { cli.Main("couponlab", commands) }
