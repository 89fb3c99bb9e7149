# Courier — the two commands a new user needs are `make run` and `make test`.
export CGO_ENABLED := 0
# go.mod names the toolchain (security fixes); fetch it through the module proxy where the
# machine's Go is older (Debian-style installs default to GOTOOLCHAIN=local).
export GOTOOLCHAIN := auto
GO        ?= go
GOBIN     := $(shell $(GO) env GOPATH)/bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
VERSITYGW := github.com/versity/versitygw/cmd/versitygw@v1.8.0

.PHONY: all build run test test-deps unit bench cross vet clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/courier ./cmd/courier
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/courier-ingest ./cmd/courier-ingest

## run: courier dev — ingest on 127.0.0.1:8080 and the agent watching ./var/inbox.
run: build
	./bin/courier dev

## test-deps: install what the tests need where it is missing (Mosquitto, versitygw).
test-deps:
	@{ command -v mosquitto || test -x /usr/sbin/mosquitto; } >/dev/null 2>&1 && command -v mosquitto_pub >/dev/null 2>&1 || { \
	  echo "installing mosquitto (Debian packages)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients >/dev/null; }
	@command -v versitygw >/dev/null 2>&1 || test -x $(GOBIN)/versitygw || { \
	  echo "installing versitygw ($(VERSITYGW))"; CGO_ENABLED=0 $(GO) install $(VERSITYGW); }
	@/usr/bin/python3 -c 'import hl7.client' >/dev/null 2>&1 && command -v mllp_send >/dev/null 2>&1 || { \
	  echo "installing python3-hl7 (Debian package: the MLLP client of the mllp tests)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-hl7 >/dev/null; }
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { \
	  echo "installing nodejs and npm (Debian packages; agent/hl7 checks FHIR against the R4 JSON schema, ingest runs tus-js-client)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
	@test -x /usr/bin/chromium || { \
	  echo "installing chromium (Debian package: the status page's browser test, agent/statuspage/browser)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

## test: the whole suite, real servers included (installed first where missing).
test: test-deps vet
	PATH="$(GOBIN):$$PATH" $(GO) test -count=1 -timeout 20m ./...

unit:
	$(GO) test -count=1 -short ./...

vet: cross
	$(GO) vet ./...

## cross: the binaries must keep compiling for Windows and arm64.
cross:
	GOOS=windows GOARCH=amd64 $(GO) build -o /dev/null ./...
	GOOS=linux GOARCH=arm64 $(GO) build -o /dev/null ./...

## bench: speed and memory, as ratios against a peer measured in the same run.
bench: test-deps
	PATH="$(GOBIN):$$PATH" $(GO) test -run '^$$' -bench . -benchmem -count 5 ./... | tee bench.out

clean:
	rm -rf bin var bench.out
