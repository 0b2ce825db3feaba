# syntax=docker/dockerfile:1
# The production image (the default, last stage) ships the servers only:
# coupon (the service, migrations, reconcile), coordinator (the DTM server)
# and shop (the sample order service the compose stack runs). The lab image
# is couponlab alone (demo, benchmarks, chaos), for the compose demo. Static
# binaries on a distroless base, run as a non-root user.
#   docker build -t opencoupon/coupon .
#   docker build --target lab -t opencoupon/couponlab .
#   docker run --rm opencoupon/coupon --help
# Not built on the development machine (it has no Docker engine); see
# the README's operations guide.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
	CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/coupon ./cmd/coordinator ./examples/shop/cmd/shop

# The lab tools, built only for the lab target.
FROM build AS lab-build
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
	CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags="-s -w" -o /out/lab/ ./cmd/couponlab

FROM gcr.io/distroless/static-debian12:nonroot AS lab
COPY --from=lab-build /out/lab/couponlab /usr/local/bin/couponlab
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/couponlab"]

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
COPY deploy/local/coupon.yaml /etc/coupon/coupon.yaml
USER nonroot:nonroot
# gRPC API, ops HTTP (/healthz, /readyz, /metrics)
EXPOSE 9090 9091
ENTRYPOINT ["/usr/local/bin/coupon"]
CMD ["serve", "--config", "/etc/coupon/coupon.yaml"]
