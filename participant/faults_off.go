//go:build !faults

package participant

// Fault hooks are compiled only into test builds (-tags faults); in every
// other build they are constants the compiler removes.

func faultClaimKeepsStock() bool     { return false }
func faultCancelIgnoresGID() bool    { return false }
func faultConfirmSkipsLedger() bool  { return false }
func faultReturnIgnoresLocked() bool { return false }
