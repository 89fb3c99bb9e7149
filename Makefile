# Courier — the two commands a new user needs are `make run` and `make test`.
export CGO_ENABLED := 0
# go.mod names the toolchain (security fixes); fetch it through the module proxy where the
# machine's Go is older (Debian-style installs default to GOTOOLCHAIN=local).
export GOTOOLCHAIN := auto
GO        ?= go
GOBIN     := $(shell $(GO) env GOPATH)/bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
# Reproducible builds and packages: every date is the last commit's (or SOURCE_DATE_EPOCH).
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
BUILD_DATE ?= $(shell date -u -d @$(SOURCE_DATE_EPOCH) +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(BUILD_DATE)
VERSITYGW := github.com/versity/versitygw/cmd/versitygw@v1.8.0

.PHONY: all build run test test-deps unit bench bench-deps bench-go cross vet clean package

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
	@command -v lintian >/dev/null 2>&1 && command -v rpm >/dev/null 2>&1 && command -v wixl >/dev/null 2>&1 && command -v msiinfo >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1 && command -v systemd-analyze >/dev/null 2>&1 && command -v useradd >/dev/null 2>&1 && command -v unshare >/dev/null 2>&1 || { \
	  echo "installing package checkers (Debian packages lintian rpm msitools dpkg-dev systemd passwd util-linux)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lintian rpm msitools dpkg-dev systemd passwd util-linux >/dev/null; }
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

## bench: Courier against tus-js-client + stock tusd and a raw curl PATCH, in one run (about
## five minutes); writes docs/benchmarks.md and docs/benchmarks.png. Installs its peers.
bench: test-deps bench-deps
	PATH="$(GOBIN):/usr/sbin:$$PATH" $(GO) run ./bench/cmd/courierbench

bench-deps:
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 && command -v curl >/dev/null 2>&1 || { \
	  echo "installing nodejs, npm and curl (Debian packages)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm curl >/dev/null; }

## bench-go: the Go micro-benchmarks (-count 5; compare medians with benchstat bench.out).
bench-go: test-deps
	PATH="$(GOBIN):/usr/sbin:$$PATH" $(GO) test -run '^$$' -bench . -benchmem -count 5 ./... | tee bench.out

## package: .deb/.rpm (courier, courier-ingest; amd64, arm64), the Windows MSI and zip, in dist/.
package:
	rm -rf dist bin/dist
	GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/dist/linux_amd64/ ./cmd/courier ./cmd/courier-ingest
	GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/dist/linux_arm64/ ./cmd/courier ./cmd/courier-ingest
	GOOS=windows GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/dist/windows_amd64/ ./cmd/courier
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(GO) run ./packaging/cmd/mkpkg -version $(VERSION) -bin bin/dist -src packaging -out dist
	@ls -l dist

clean:
	rm -rf bin var bench.out dist
