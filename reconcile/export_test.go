package reconcile

// SplitMinSize lets the external tests read small files in parts.
var SplitMinSize = &splitMinSize

// The shop ledger queries, for EXPLAIN.
const OrdersQuery, PaymentsQuery = ordersQuery, paymentsQuery
