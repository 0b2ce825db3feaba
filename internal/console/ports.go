package console

import (
	"context"
	"time"
)

// Identities tells whose bearer token a sign-in presents. The service's
// authentication configuration answers it; the console only uses the
// identity to show who is signed in and to name them in created_by /
// approved_by / operator, which the service checks against the token.
// Identify returns an error for a token it does not know.
type Identities interface {
	Identify(ctx context.Context, token string) (identity string, err error)
}

// ReconcileRuns lists the nightly reconcile runs, newest first, at most
// limit of them.
type ReconcileRuns interface {
	Runs(ctx context.Context, limit int) ([]ReconcileRun, error)
}

// ReconcileRun is one reconcile run as the console shows it.
type ReconcileRun struct {
	// Date is the day the run covered.
	Date time.Time
	// Totals counts findings per class (COUPON_USED_ORDER_NOT_PAID, …).
	Totals map[string]int64
	// MoneyAtRisk is the sum of the findings' amounts at risk, minor units.
	MoneyAtRisk int64
	// ReportPath is the run's report.html on the local disk; empty if none.
	ReportPath string
	// Pending are the orders still in flight, re-checked by the next run.
	Pending []ReconcilePending
}

// ReconcilePending is one in-flight order a run left for the next one.
type ReconcilePending struct {
	OrderNo    string
	CouponCode string
	Detail     string
}

// Transactions tells the status of a DTM global transaction (prepared,
// submitted, aborting, succeed, failed); found is false when the
// coordinator does not know the gid.
type Transactions interface {
	Status(ctx context.Context, gid string) (status string, found bool, err error)
}

// AuthEvents counts what the sign-in refuses (metrics.Metrics): failed
// sign-ins, and attempts refused while their client waits out the
// throttle. surface is "console".
type AuthEvents interface {
	AuthFailed(surface string)
	AuthThrottled(surface string)
}
