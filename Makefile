# coupon — see README.md. Two commands set everything up on a fresh machine:
#   make run    the whole local stack in the foreground with a demo
#   make test   unit and integration tests (real MariaDB, Redis and DTM)
SHELL := /bin/bash
# The DTM client library reads its log level at start-up and complains when
# it is unset; services configure their own loggers.
export LOG_LEVEL ?= WARN
GO    ?= go
BIN   := bin
PKGS  := ./...

PROTOC_GEN := --plugin=protoc-gen-go=$$($(GO) tool -n protoc-gen-go) \
	--plugin=protoc-gen-go-grpc=$$($(GO) tool -n protoc-gen-go-grpc)
# The HTTP/JSON gateway and its OpenAPI document; the openapiv2 options protos
# come from the grpc-gateway module pinned in go.mod.
GATEWAY_GEN := --plugin=protoc-gen-grpc-gateway=$$($(GO) tool -n protoc-gen-grpc-gateway) \
	--plugin=protoc-gen-openapiv2=$$($(GO) tool -n protoc-gen-openapiv2) \
	-I "$$($(GO) list -m -f '{{.Dir}}' github.com/grpc-ecosystem/grpc-gateway/v2)"

.PHONY: all build generate lint test test-short bench run up down deps clean chaos chaos-smoke soak mutate

all: build

deps:
	deploy/local/deps.sh

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/coupon ./cmd/coupon
	$(GO) build -o $(BIN)/couponlab ./cmd/couponlab
	@if [ -d cmd/coordinator ]; then $(GO) build -o $(BIN)/coordinator ./cmd/coordinator; fi
	@if [ -d examples/shop/cmd/shop ]; then $(GO) build -o $(BIN)/shop ./examples/shop/cmd/shop; fi

# Regenerates the committed gRPC and gateway code, the OpenAPI document and
# the configuration reference (docs/configuration.md); CI fails if this
# leaves a diff.
generate:
	$(GO) generate ./internal/config
	cd proto && protoc -I . $(PROTOC_GEN) $(GATEWAY_GEN) \
		--go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative \
		--grpc-gateway_out=. --grpc-gateway_opt=paths=source_relative \
		--openapiv2_out=openapi \
		--openapiv2_opt=allow_merge=true,merge_file_name=coupon,openapi_naming_strategy=simple,disable_default_errors=false \
		coupon/v1/*.proto
	cd proto && protoc -I . $(PROTOC_GEN) --go_out=. --go_opt=paths=source_relative coupon/events/v1/*.proto
	@if [ -d examples/shop/proto ]; then \
		protoc -I examples/shop/proto $(PROTOC_GEN) \
		--go_out=examples/shop/proto --go_opt=paths=source_relative \
		--go-grpc_out=examples/shop/proto --go-grpc_opt=paths=source_relative \
		examples/shop/proto/shop/v1/*.proto; fi

lint:
	$(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)

# Integration tests need MariaDB on 127.0.0.1:3306 and Redis on :6379
# (deploy/local/deps.sh starts or installs them). Each test package uses
# its own databases and Redis key prefix and removes them afterwards.
# The events test again at the events issue's scale, without the race
# detector: 100,000 claims with TCC, Saga and refund orders, the relay
# SIGKILLed twice and nats-server restarted (about a minute).
test: deps
	$(GO) test -race -count=1 -timeout 20m $(PKGS)
	COUPON_EVENTS_TEST_CLAIMS=100000 $(GO) test -count=1 -timeout 20m -run '^TestEventsEveryChangeOnceInOrder$$' ./internal/relay/

test-short:
	$(GO) test -count=1 -short $(PKGS)

bench: up
	deploy/local/bench.sh

up: build
	deploy/local/up.sh

down:
	deploy/local/down.sh

# The whole local stack in the foreground: dependencies, migrations, the
# coordinator, the coupon service and the sample shop; then the demo. Ctrl-C
# stops everything it started.
run: build
	deploy/local/run.sh

# Chaos (docs/chaos.md): every scenario against a stack of its own on free
# loopback ports (never the shared 3306/6379); exit 1 on a violated invariant.
chaos-smoke: build
	@mkdir -p .run
	$(BIN)/couponlab chaos run --scenario all --duration 4s --bin $(BIN) --report .run/chaos-smoke.json --markdown

chaos: build
	@mkdir -p .run
	$(BIN)/couponlab chaos run --scenario all --duration 30s --bin $(BIN) --report .run/chaos.json

# The nightly soak: every scenario for SOAK_DURATION (4 minutes: about an
# hour and a half in all) under the default closed-loop callers, the seed
# taken from the clock and printed first (SOAK_SEED=N replays a run); the
# Markdown and JSON reports go to .run/soak-SEED.{md,json}. Exit 1 on a
# violation or on a scenario whose commits fell below the floor.
SOAK_DURATION ?= 4m
ifeq ($(SOAK_SEED),)
SOAK_SEED := $(shell date +%s)
endif
soak: build
	@mkdir -p .run
	@echo "soak seed $(SOAK_SEED)"
	$(BIN)/couponlab chaos run --scenario all --duration $(SOAK_DURATION) --seed $(SOAK_SEED) --bin $(BIN) \
		--report .run/soak-$(SOAK_SEED).json --markdown-file .run/soak-$(SOAK_SEED).md --log warn

# One-line mutations of the money and authentication paths
# (tools/mutate/mutations.go), each run against the tests that should catch
# it; prints the mutation score and fails on an unexplained survivor. Needs
# MariaDB, Redis and DTM like make test; not part of CI (about an hour).
mutate: deps
	$(GO) run ./tools/mutate

clean:
	rm -rf $(BIN) .run
