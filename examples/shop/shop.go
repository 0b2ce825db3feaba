// Package shop is a sample shop that enlists coupons: an order service and a
// payment service, each with its own database, where every order is one DTM
// TCC global transaction over the coupon, the payment and the order row.
// Order services copy it; the demo, chaos tests and reconciliation run
// against it.
package shop

import (
	"log/slog"
	"regexp"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	shopv1 "github.com/opencoupon/coupon/examples/shop/proto/shop/v1"
)

// NewGRPCServer returns a gRPC server with both services, health and
// reflection registered, and errors mapped by UnaryErrors.
func NewGRPCServer(log *slog.Logger, orders *OrderServer, payments *PaymentServer, opts ...grpc.ServerOption) *grpc.Server {
	opts = append(opts, grpc.ChainUnaryInterceptor(UnaryErrors(log)))
	gs := grpc.NewServer(opts...)
	shopv1.RegisterOrderServiceServer(gs, orders)
	shopv1.RegisterPaymentServiceServer(gs, payments)
	healthpb.RegisterHealthServer(gs, health.NewServer())
	reflection.Register(gs)
	return gs
}

// Order numbers go into DTM global transaction ids, so they are kept plain.
var orderNoPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func validOrderNo(s string) bool { return orderNoPattern.MatchString(s) }
