# mcpgw: a Modbus TCP to RTU gateway.
#   make run     the gateway on 127.0.0.1:5020 with simulated devices on a virtual serial line
#   make test    all tests, with the race detector (interop tests need socat, mbpoll,
#                libmodbus-dev, python3-pymodbus and tshark; .ci/run installs them)
#   make build   bin/mcpgw for this machine, plus static linux/arm64 and linux/arm (GOARM=7)
#   make cross   windows/amd64, darwin/arm64 and freebsd/amd64 binaries in dist/ (checked in CI)
#   make bench   the Go benchmarks, then mcpgw-bench (writes BENCHMARKS.md)
#   make fuzz    each fuzz target for FUZZTIME (default 30s; a count such as 100000x avoids Go 1.26's deadline flake, golang/go#75804)
#   make soak    many checking clients against faulty simulated devices for SOAK (default 3m)
#   make simulate the serial line's recovery rules in virtual time: SIMRUNS runs of SIMN
#                transactions per case (default 3 x 1000000), a new seed each

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
FUZZTIME ?= 30s
SOAK     ?= 3m
SIMN     ?= 1000000
SIMRUNS  ?= 3

.PHONY: all run test build cross deb bench fuzz soak simulate vet clean screenshot

all: vet test build

run:
	$(GO) run ./cmd/mcpgw demo

# The status page as a browser shows it, during a test with a flaky and
# an unplugged unit: for the documentation (needs chromium).
screenshot:
	$(GO) test -count=1 -run '^TestStatusHistoryInABrowser$$' ./pkg/gateway -screenshot $(CURDIR)/docs/status.png

test:
	$(GO) test -race -count=1 ./...

vet:
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed on:"; gofmt -l .; exit 1; }
	$(GO) vet ./...

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/mcpgw ./cmd/mcpgw
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist/mcpgw-linux-arm64 ./cmd/mcpgw
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist/mcpgw-linux-armv7 ./cmd/mcpgw
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist/mcpgw-linux-amd64 ./cmd/mcpgw

# Where else Go runs: the gateway builds for each (vet too, tests
# included), with portable fallbacks for Linux's serial speed-ups.
CROSS := windows/amd64 darwin/arm64 freebsd/amd64
cross:
	@for p in $(CROSS); do \
		os=$${p%/*}; arch=$${p#*/}; ext=; [ $$os = windows ] && ext=.exe; \
		echo "== $$os/$$arch"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) vet ./... || exit 1; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist/mcpgw-$$os-$$arch$$ext ./cmd/mcpgw || exit 1; \
	done

# Packages for amd64, arm64 and armhf in dist/: .deb, .rpm and .apk, with
# nfpm (packaging/build-deb, packaging/nfpm.yaml).
deb:
	bash packaging/build-deb

# The Go benchmarks of the hot path, then the end-to-end benchmark, which
# writes BENCHMARKS.md.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
	$(GO) build -o bin/mcpgw ./cmd/mcpgw
	$(GO) build -o bin/mcpgw-bench ./cmd/mcpgw-bench
	./bin/mcpgw-bench -gateway bin/mcpgw -out BENCHMARKS.md

# Each target alone: go test -fuzz takes one target per run.
FUZZ_TARGETS := pkg/crc:FuzzChecksum pkg/rtu:FuzzScan pkg/tcp:FuzzMBAP pkg/registers:FuzzHandle pkg/chain/validate:FuzzRequest \
                pkg/ops/capture:FuzzRead pkg/tools/replay:FuzzAnalyze pkg/wire/mbsec:FuzzParseRole pkg/pdu:FuzzWritten pkg/pdu:FuzzRequestLen \
                pkg/chain/cache:FuzzValues pkg/tag:FuzzDecode pkg/quirk:FuzzSplitJoin pkg/ops/selfunit:FuzzAnswer pkg/wire/rtuovertcp:FuzzRead pkg/wire/ascii:FuzzParse pkg/north/spool:FuzzOpen
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "== $$fn ($$pkg) for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) ./$$pkg || exit 1; \
	done

# Each run prints its seed; a failing one says how to replay it.
simulate:
	@for i in $$(seq $(SIMRUNS)); do \
		$(GO) test -count=1 -run '^TestSimulate$$' -v ./pkg/rtu -sim.n $(SIMN) | grep -E 'seed|transactions|WRONG|FAIL|ok' || exit 1; \
	done

soak:
	$(GO) build -o bin/mcpgw ./cmd/mcpgw
	$(GO) build -o bin/mcpgw-bench ./cmd/mcpgw-bench
	./bin/mcpgw-bench soak -gateway bin/mcpgw -duration $(SOAK)

clean:
	rm -rf bin dist
