// Command gen writes the configuration reference (docs/configuration.md)
// from the keys described in internal/config.
//
//	go run ./internal/config/gen -o docs/configuration.md
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/opencoupon/coupon/internal/config"

	_ "github.com/opencoupon/coupon/internal/dtmlevel" // quiets the DTM logger the server's packages link
)

func main() {
	out := flag.String("o", "docs/configuration.md", "file to write")
	flag.Parse()
	if err := os.WriteFile(*out, config.Reference(), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "gen: %v\n", err)
		os.Exit(1)
	}
}
