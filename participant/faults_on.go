//go:build faults

package participant

import (
	"os"
	"slices"
	"strings"
)

// Deliberately broken behaviour for tests that prove a checker can fail
// (chaos's invariants): only in binaries built with -tags faults, switched
// on by COUPON_FAULTS, a comma-separated list of
//
//	claim-keeps-stock     a claim whose write definitely failed keeps its stock unit
//	cancel-ignores-gid    Cancel releases the coupon whatever transaction holds it
//	confirm-skips-ledger  Confirm writes no CONSUME ledger row
//	return-ignores-locked Return of a coupon still locked for its order answers OK, nothing to return
var faults = strings.Split(os.Getenv("COUPON_FAULTS"), ",")

func faultClaimKeepsStock() bool     { return slices.Contains(faults, "claim-keeps-stock") }
func faultCancelIgnoresGID() bool    { return slices.Contains(faults, "cancel-ignores-gid") }
func faultConfirmSkipsLedger() bool  { return slices.Contains(faults, "confirm-skips-ledger") }
func faultReturnIgnoresLocked() bool { return slices.Contains(faults, "return-ignores-locked") }
