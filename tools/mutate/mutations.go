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
// catch it.
var mutations = []mutation{
	{
		ID: "tcc-holds-ignores-gid", Bug: "a Confirm or Cancel acts on a lock of another transaction for the same order",
		File: "participant/tcc.go", Find: "return c.LockGID == br.GID || c.LockGID == \"\"", Replace: "return true",
		Pkg: "./participant/rpc", Run: "TestTwoTransactionsOneOrder$|TestCancelReleasesOnlyItsOwnLock",
	},
	{
		ID: "tcc-holds-ignores-order", Bug: "a Confirm or Cancel acts on a lock of another order",
		File: "participant/tcc.go", Find: "if c.Status != CouponLocked || c.OrderNo != orderNo {", Replace: "if c.Status != CouponLocked {",
		Pkg: "./participant/rpc", Run: "TestTwoTransactionsOneOrder$|TestCancelReleasesOnlyItsOwnLock|TestCompensationNeverRefuses",
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
		Pkg: "./participant/rpc", Run: "TestBranchBarrierCases|TestTwoTransactionsOneOrder$",
	},
	{
		ID: "consume-skips-ledger", Bug: "a Confirm writes no CONSUME ledger row",
		File: "participant/tcc.go", Find: "UsedAt: now, Ledger: []Entry{{OpConsume, c.OrderNo, c.DiscountAmount}}, At: now,", Replace: "UsedAt: now, At: now,",
		Pkg: "./participant/rpc", Run: "TestTCCSuccess|TestLookupCouponsShowsLedger",
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
}
