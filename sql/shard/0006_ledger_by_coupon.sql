-- Operators look a coupon's history up by coupon (AdminService.LookupCoupons).
ALTER TABLE coupon_ledger ADD INDEX IF NOT EXISTS idx_coupon (coupon_id, id);
