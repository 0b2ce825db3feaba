package auth

import (
	"strings"

	couponv1 "github.com/opencoupon/coupon/proto/coupon/v1"
)

// Roles a caller can hold.
const (
	RoleAdmin = "admin" // AdminService
	RoleApp   = "app"   // the user-side CouponService methods
	RoleOrder = "order" // the TCC/Saga branch methods and the user-side reads
)

// UserReads are the user-side reads: apps and order services may call them.
var UserReads = []string{
	couponv1.CouponService_GetCampaign_FullMethodName,
	couponv1.CouponService_GetTemplate_FullMethodName,
	couponv1.CouponService_ListUserCoupons_FullMethodName,
	couponv1.CouponService_GetCoupon_FullMethodName,
	couponv1.CouponService_ListApplicableCoupons_FullMethodName,
}

// UserWrites are the user-side changes only apps may call.
var UserWrites = []string{
	couponv1.CouponService_ClaimCoupon_FullMethodName,
	couponv1.CouponService_ClaimCouponByPhone_FullMethodName,
	couponv1.CouponService_BindPhone_FullMethodName,
}

// Branches are the distributed-transaction branch methods, which order
// services call through DTM. A new branch method is one line here.
var Branches = []string{
	couponv1.CouponService_LockCoupon_FullMethodName,
	couponv1.CouponService_ConsumeCoupon_FullMethodName,
	couponv1.CouponService_UnlockCoupon_FullMethodName,
	couponv1.CouponService_UseCoupon_FullMethodName,
	couponv1.CouponService_UseCouponRevert_FullMethodName,
	couponv1.CouponService_ReturnCoupon_FullMethodName,
}

// CoordinatorCalls are the branch methods DTM itself calls: a TCC's Confirm
// and Cancel, a Saga's action and compensation, a 2-phase message's branch.
// A branch credential is good for these only; the Try (LockCoupon) is the
// order service's own call, made with its own token.
var CoordinatorCalls = []string{
	couponv1.CouponService_ConsumeCoupon_FullMethodName,
	couponv1.CouponService_UnlockCoupon_FullMethodName,
	couponv1.CouponService_UseCoupon_FullMethodName,
	couponv1.CouponService_UseCouponRevert_FullMethodName,
	couponv1.CouponService_ReturnCoupon_FullMethodName,
}

// CoordinatorCall reports whether DTM calls method (a branch credential may).
func CoordinatorCall(method string) bool { return matchAny(CoordinatorCalls, method) }

// adminService grants every AdminService method, present and future.
var adminService = "/" + couponv1.AdminService_ServiceDesc.ServiceName + "/"

// RoleMethods says which methods each role may call. An entry ending in
// "/" grants a whole service.
var RoleMethods = map[string][]string{
	RoleAdmin: {adminService},
	RoleApp:   concat(UserReads, UserWrites),
	RoleOrder: concat(Branches, UserReads),
}

// open are served to anyone: load balancers and tools must reach them
// without a credential.
var open = []string{
	"/grpc.health.v1.Health/",
	"/grpc.reflection.v1.ServerReflection/",
	"/grpc.reflection.v1alpha.ServerReflection/",
}

// Open reports whether method needs no credential.
func Open(method string) bool { return matchAny(open, method) }

// IsBranch reports whether method is a branch method.
func IsBranch(method string) bool { return matchAny(Branches, method) }

// Allowed reports whether any of roles may call method.
func Allowed(roles []string, method string) bool {
	for _, r := range roles {
		if matchAny(RoleMethods[r], method) {
			return true
		}
	}
	return false
}

func matchAny(patterns []string, method string) bool {
	for _, p := range patterns {
		if p == method || strings.HasSuffix(p, "/") && strings.HasPrefix(method, p) {
			return true
		}
	}
	return false
}

func concat(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}
