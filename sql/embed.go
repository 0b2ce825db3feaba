// Package migrations holds the numbered SQL migrations of the coupon
// service, one folder per database role, embedded into the binary:
//
//   - main/: campaigns, templates and stock operations (one database);
//   - shard/: coupon records, per-user claim counts, the coupon ledger and
//     DTM's barrier table (every shard database). Shard files are Go
//     templates ranged over the shard's table numbers.
//
// The DTM coordinator's store DDL lives in dtmstore/.
package migrations

import "embed"

// FS holds main/*.sql and shard/*.sql.
//
//go:embed main/*.sql shard/*.sql
var FS embed.FS
