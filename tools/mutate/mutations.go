package main

// mutation is one plausible bug: Find (which must occur exactly once in
// File) becomes Replace, plus any further Also edits of the same file, and
// the tests Run in Pkg should fail.
type mutation struct {
	ID      string
	Bug     string // what the mutant would do in production
	File    string
	Find    string
	Replace string
	Also    []edit
	Pkg     string
	Run     string
	// Explain, when set, says why a surviving mutant is harmless; it then
	// counts as explained, not as a survivor.
	Explain string
}

type edit struct{ Find, Replace string }

func (m mutation) edits() []edit { return append([]edit{{m.Find, m.Replace}}, m.Also...) }

// The money and authentication paths. Each entry names the bug in words;
// keep Find short but unique, and point Run at the fewest tests that must
// catch it. Chaos's and the explorer's tests build some of these mutants
// (with -overlay) to prove their checkers fail on a broken build:
// cancel-ignores-gid, claim-keeps-stock, consume-skips-ledger and
// return-ignores-locked.
var mutations = []mutation{
	{
		ID: "tcc-holds-ignores-gid", Bug: "a Confirm or Cancel acts on a lock of another transaction for the same order",
		File: "participant/tcc.go", Find: "return c.LockGID == br.GID || c.LockGID == \"\"", Replace: "return true",
		Pkg: "./participant/rpc", Run: "TestTwoTransactionsOneOrder$|TestCancelReleasesOnlyItsOwnLock",
	},
	{
		ID: "tcc-holds-ignores-order", Bug: "a Confirm or Cancel acts on a lock of another order",
		File: "participant/tcc.go", Find: "if c.Status != CouponLocked || c.OrderNo != orderNo {", Replace: "if c.Status != CouponLocked {",
		Pkg: "./participant/rpc", Run: "TestLegacyLockMatchedByOrder|TestTwoTransactionsOneOrder$|TestCancelReleasesOnlyItsOwnLock",
	},
	{
		ID: "try-reserves-unavailable", Bug: "a Try locks a coupon that is already LOCKED or USED",
		File: "participant/tcc.go", Find: "if c.Status != CouponAvailable {", Replace: "if c.Status == CouponExpired {",
		Pkg: "./participant/rpc", Run: "TestTCCTwoOrdersOneCoupon|TestTwoTransactionsOneOrder$",
	},
	{
		ID: "try-accepts-expired", Bug: "a Try locks an expired, unswept coupon",
		File: "participant/tcc.go", Find: "if c.Status == CouponAvailable && !now.Before(c.ExpireAt) || c.Status == CouponExpired {", Replace: "if c.Status == CouponExpired {",
		Pkg: "./participant", Run: "TestLockRefusesExpiredUnswept",
	},
	{
		ID: "checkheld-ignores-gid", Bug: "a duplicate Try of another transaction is answered OK for a coupon locked by the first",
		File: "participant/tcc.go", Find: "if c.Status != held || c.LockGID != br.GID || c.OrderNo != r.Order.OrderNo {", Replace: "if c.Status != held || c.OrderNo != r.Order.OrderNo {",
		Pkg: "./participant/rpc", Run: "TestTwoTransactionsOneOrder$",
	},
	{
		ID: "checkheld-ignores-discount", Bug: "a duplicate Try for a bigger order is answered with the old discount",
		File: "participant/tcc.go", Find: "if d != c.DiscountAmount {", Replace: "if false {",
		Pkg: "./participant/rpc", Run: "TestRepeatedTryMustGetTheLockedDiscount|TestTwoTransactionsOneOrder$",
	},
	{
		ID: "consume-skips-ledger", Bug: "a Confirm writes no CONSUME ledger row",
		File: "participant/tcc.go", Find: "UsedAt: now, Ledger: []Entry{{OpConsume, c.OrderNo, c.DiscountAmount}}, At: now,", Replace: "UsedAt: now, At: now,",
		Pkg: "./participant/rpc", Run: "TestTCCSuccess|TestLookupCouponsShowsLedger",
	},
	{
		ID: "cancel-ignores-gid", Bug: "a Cancel releases the coupon whatever transaction and order hold its lock",
		File: "participant/tcc.go", Find: "if !holds(c, br, r.Order.OrderNo) {", Replace: "if !holds(c, br, r.Order.OrderNo) && c.Status != CouponLocked {",
		Pkg: "./participant/rpc", Run: "TestCancelReleasesOnlyItsOwnLock|TestCancelNamingAnotherTransactionsCoupon",
	},
	{
		ID: "release-keeps-daily-use", Bug: "a Cancel does not give the day's use back",
		File: "participant/tcc.go", Find: "Ledger: []Entry{{OpRelease, c.OrderNo, c.DiscountAmount}}, GiveBackUse: true, At: now}", Replace: "Ledger: []Entry{{OpRelease, c.OrderNo, c.DiscountAmount}}, At: now}",
		Pkg: "./participant/rpc", Run: "TestTCCDailyUseLimit|TestTwoTransactionsOneOrder$",
	},
	{
		ID: "release-ignores-expiry", Bug: "a Cancel past the coupon's expiry makes it AVAILABLE again",
		File: "participant/tcc.go", Find: "	if !now.Before(c.ExpireAt) {\n		next = CouponExpired\n	}\n	return &Change{Status: next, Ledger: []Entry{{OpRelease", Replace: "	if false {\n		next = CouponExpired\n	}\n	return &Change{Status: next, Ledger: []Entry{{OpRelease",
		Pkg: "./participant/...", Run: "Expir|Release|Cancel",
	},
	{
		ID: "revert-ignores-gid", Bug: "a Saga revert gives back a use held by another saga",
		File: "participant/saga.go", Find: "if c.Status != CouponUsed || c.LockGID != br.GID || c.OrderNo != r.Order.OrderNo {", Replace: "if c.Status != CouponUsed || c.OrderNo != r.Order.OrderNo {",
		Pkg: "./participant/rpc", Run: "Saga",
	},
	{
		ID: "daily-use-uncounted", Bug: "a Try counts no daily use",
		File: "participant/mysql/tcc.go", Find: "	if len(ch.CountUse) > 0 {\n		stmts", Replace: "	if false {\n		stmts",
		Pkg: "./participant/rpc", Run: "TestTCCDailyUseLimit",
	},
	{
		ID: "role-app-gets-branches", Bug: "the app role may call the branch methods (ReturnCoupon among them)",
		File: "internal/auth/roles.go", Find: "RoleApp:   concat(UserReads, UserWrites),", Replace: "RoleApp:   concat(UserReads, UserWrites, Branches),",
		Pkg: "./internal/auth ./participant/rpc", Run: "Role|Caller",
	},
	{
		ID: "role-order-gets-claims", Bug: "the order role may claim coupons for any user",
		File: "internal/auth/roles.go", Find: "RoleOrder: concat(Branches, UserReads),", Replace: "RoleOrder: concat(Branches, UserReads, UserWrites),",
		Pkg: "./internal/auth ./participant/rpc", Run: "Role|Caller",
	},
	{
		ID: "auth-unknown-token", Bug: "an unknown bearer token is taken for the first configured caller",
		File: "internal/auth/auth.go", Find: "c := a.byToken[h]\n	if c == nil ||", Replace: "c := a.byToken[h]\n	for _, first := range a.byToken {\n		c = first\n	}\n	if c == nil ||",
		Pkg: "./internal/auth", Run: ".",
	},
	{
		ID: "console-admin-unchecked", Bug: "the console signs in any known token, admin or not",
		File: "internal/console/signin.go", Find: "if _, err := c.d.Admin.ListCampaigns(actx, &couponv1.ListCampaignsRequest{PageSize: 1}); err != nil {", Replace: "if _, err := c.d.Admin.ListCampaigns(actx, &couponv1.ListCampaignsRequest{PageSize: 1}); false && err != nil {",
		Pkg: "./internal/console", Run: "Sign",
	},
	{
		ID: "repair-releases-submitted", Bug: "reconcile's repair releases the lock of a transaction DTM still holds as submitted",
		File: "reconcile/repair.go", Find: "	case DTMFailed:\n", Replace: "	case DTMFailed, DTMSubmitted:\n",
		Also: []edit{{"case DTMPrepared, DTMSubmitted, DTMAborting:", "case DTMPrepared, DTMAborting:"}},
		Pkg:  "./reconcile", Run: "Repair|Orphan",
	},
	{
		ID: "return-ignores-locked", Bug: "a refund's Return finds the coupon LOCKED for its order, answers OK and the later Confirm spends it on a refunded order",
		File: "participant/saga.go", Find: "if c.Status == CouponLocked && c.OrderNo == r.OrderNo {", Replace: "if false {",
		Pkg: "./participant/rpc", Run: "TestReturnWaitsForConfirm",
	},
	{
		ID: "return-any-order", Bug: "a Return gives back a coupon used by another order",
		File: "participant/saga.go", Find: "if c.Status != CouponUsed || c.OrderNo != r.OrderNo {", Replace: "if c.Status != CouponUsed {",
		Pkg: "./participant/rpc", Run: "TestReturnCoupon|TestReturnWaitsForConfirm",
	},
	{
		ID: "claim-keeps-stock", Bug: "a claim whose write definitely failed keeps its stock unit",
		File: "participant/claim.go", Find: "\ts.giveBack(ctx, ticket)\n\treturn err", Replace: "\t_ = ticket\n\treturn err",
		Pkg: "./participant", Run: "TestClaimWriteBoundedFromTake|TestRedisStallConservesStock",
	},
	{
		ID: "claim-refuses-before-replay", Bug: "a retry of a claim that may have committed is refused SOLD_OUT without looking for its coupon",
		File: "participant/claim.go", Find: "	if m.maybeIssued {\n		if c, err := replay(); c != nil || err != nil {", Replace: "	if false {\n		if c, err := replay(); c != nil || err != nil {",
		Pkg: "./participant", Run: "TestClaimRetryAfter",
	},
	{
		ID: "write-conflict-not-replayed", Bug: "a claim whose write finds its request ID taken answers REQUEST_ID_CONFLICT without looking for the coupon an earlier attempt wrote",
		File: "participant/claim.go", Find: "\tif errors.As(err, &before) {\n\t\tif c, rerr := replay();", Replace: "\tif errors.As(err, &before) {\n\t\tif c, rerr := (*Coupon)(nil), error(nil);",
		Pkg: "./participant", Run: "TestFastClaimRetryPastMarkerTTL",
	},
	{
		ID: "claim-forgets-unknown-commit", Bug: "a claim whose commit outcome is unknown drops its request marker",
		File: "participant/claim.go", Find: "	case EREFUSED, EINVALID, ENOTFOUND:\n		return true", Replace: "	case EREFUSED, EINVALID, ENOTFOUND, EUNAVAILABLE, EINTERNAL:\n		return true",
		Pkg: "./participant", Run: "TestClaimRetryAfter",
	},
	{
		ID: "takeover-not-maybe-issued", Bug: "a claim that takes over a dead claim's marker does not look for that claim's coupon",
		File: "participant/claim.go", Find: "return mark{tok: tok, maybeIssued: true}, nil\n", Replace: "return mark{tok: tok}, nil\n",
		Pkg: "./participant", Run: "TestClaimRetryAfterTakeover",
	},
	{
		ID: "approve-by-money-editor", Bug: "the last editor of a template's money rules approves it himself",
		File: "participant/admin.go", Find: "if t.MoneyEditedBy != \"\" && same(approver, t.MoneyEditedBy) {", Replace: "if false {",
		Pkg: "./participant/rpc", Run: "TestLastMoneyEditorCannotApprove",
	},
	{
		ID: "approve-stale-version", Bug: "an approval of a version the approver never saw goes through",
		File: "participant/admin.go", Find: "if t.Version != version {", Replace: "if false {",
		Pkg: "./participant/rpc", Run: "TestApproveStaleVersion",
	},
	{
		ID: "branchcred-any-signature", Bug: "a branch credential with a forged signature is accepted",
		File: "client/branchcred/branchcred.go", Find: "if !hmac.Equal(sig, mac(secret, p)) {", Replace: "if !hmac.Equal(sig, mac(secret, p)) && false {",
		Pkg: "./client/branchcred ./internal/auth", Run: ".",
	},
	{
		ID: "branchcred-never-expires", Bug: "an expired branch credential is accepted",
		File: "client/branchcred/branchcred.go", Find: "if !now.Before(c.Expires) {", Replace: "if false {",
		Pkg: "./client/branchcred ./internal/auth", Run: ".",
	},
	{
		ID: "branchcred-any-gid", Bug: "a branch credential copied from the coordinator works for another transaction",
		File: "internal/auth/auth.go", Find: "len(gid) != 1 || gid[0] != claims.GID {", Replace: "len(gid) != 1 {",
		Pkg: "./internal/auth ./internal/app", Run: "Branch|Credential",
	},
	{
		ID: "branchcred-any-coupon", Bug: "a branch credential works for coupons its transaction never named",
		File: "internal/auth/auth.go", Find: "if !ok || !claims.Covers(code, orderNo) {", Replace: "if !ok {",
		Pkg: "./internal/auth ./internal/app", Run: "Branch|Credential",
	},
	{
		ID: "branchcred-revert-any-time", Bug: "a copy of a succeeded Saga's credential gives its used coupon back through UseCouponRevert",
		File: "internal/auth/auth.go", Find: "if method == couponv1.CouponService_UseCouponRevert_FullMethodName && a.txns != nil {", Replace: "if false {",
		Pkg: "./internal/auth ./internal/app", Run: "Branch|Credential",
	},
	{
		ID: "janitor-max-age-deletes-open", Bug: "the barrier janitor deletes the rows of a transaction still retrying past max_age",
		File: "internal/janitor/janitor.go", Find: "case r.expired && (finished || status == Unknown):", Replace: "case r.expired:",
		Pkg: "./internal/janitor", Run: "TestJanitorKeepsUnfinishedTransactions",
	},
	{
		ID: "coordinator-trusts-request-type", Bug: "a resubmit labelled with another type reaches DTM's unguarded submit",
		File: "coordinator/guard.go", Find: "		if reqType != g.TransType {", Replace: "		if reqType != g.TransType {\n			return nil, true\n		}\n		if false {",
		Pkg: "./coordinator", Run: "TestEverySubmitRouteIsGuarded",
	},
	{
		ID: "coordinator-resubmit-skips-confirm", Bug: "a resubmit of a submitted TCC is passed to DTM, which marks it succeed without its Confirms",
		File: "coordinator/guard.go", Find: "		case dtmcli.StatusSubmitted:\n			t := &dtmsvr.TransGlobal", Replace: "		case dtmcli.StatusSubmitted:\n			return nil, true\n			t := &dtmsvr.TransGlobal",
		Pkg: "./coordinator", Run: "TestEverySubmitRouteIsGuarded",
	},
	{
		ID: "reconcile-skips-refunded", Bug: "reconcile says nothing of a refunded order whose coupon never came back",
		File: "reconcile/match.go", Find: "			if c := &cs[i]; c.consumed {\n				f := base(ClassRefundCouponNotReturned", Replace: "			if c := &cs[i]; false && c.consumed {\n				f := base(ClassRefundCouponNotReturned",
		Pkg: "./reconcile", Run: "TestRefundedCouponNotReturnedIsReported|TestMatchRules",
	},
	{
		ID: "relay-deletes-unacknowledged", Bug: "the event relay deletes every outbox row it read, whether JetStream stored it or not",
		File: "internal/relay/relay.go", Find: "\t\tif all {\n", Replace: "\t\tif all || len(done) >= 0 {\n",
		Pkg: "./internal/relay", Run: "TestEventsEveryChangeOnceInOrder",
	},
	{
		ID: "release-without-event", Bug: "a branch that leaves the coupon AVAILABLE (Cancel, compensation, return) writes no event",
		File: "participant/mysql/tcc.go", Find: "eventInsert(evs); q != \"\" {", Replace: "eventInsert(evs); q != \"\" && ch.Status != participant.CouponAvailable {",
		Pkg: "./internal/relay", Run: "TestEventsEveryChangeOnceInOrder",
	},
	{
		ID: "relay-ignores-order", Bug: "the event relay publishes a coupon's events in one wave, so a later one can be stored before an earlier one that failed",
		File: "internal/relay/relay.go", Find: "return orderKey{coupon: e.CouponID}", Replace: "return orderKey{coupon: e.CouponID, template: e.Seq}",
		Pkg: "./internal/relay", Run: "TestWaves",
	},
	{
		ID: "relay-counts-refusals", Bug: "the relay counts JetStream's refusal of an event as its acknowledgement and deletes its row",
		File: "internal/relay/publish.go", Find: "if perr == nil {", Replace: "if perr == nil || true {",
		Pkg: "./internal/relay", Run: "TestAcksMatchAnswersToTheirWave",
	},
	{
		ID: "relay-stalls-on-bad-row", Bug: "an outbox row that cannot be read holds back every event after it",
		File: "internal/relay/relay.go", Find: "if err := r.setAside(ctx, src, name, bad); err != nil {", Replace: "if err := error(bad); err != nil {",
		Pkg: "./internal/relay", Run: "TestRelaySetsAsideUnreadableRow",
	},
}
