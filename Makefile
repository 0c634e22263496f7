# fieldgate — see README.md. Every target installs what it needs itself.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
BIN := bin
# CI (CI=true) turns a missing test peer into a failure instead of a skip.
ifeq ($(CI),true)
export FIELDGATE_REQUIRE_ALL ?= 1
endif
FUZZTIME ?= 10s
# Fuzz targets as package:Target, each run for FUZZTIME by `make test` and
# longer by `make fuzz`.
FUZZ_TARGETS := \
	./collectors/configfile:FuzzDecode \
	./collectors/configfile:FuzzAliases \
	./collectors/reading:FuzzAppendJSON \
	./collectors/command:FuzzHandleJSON \
	./collectors/queue:FuzzScan \
	./collectors/queue:FuzzPowerCut \
	./collectors/modbus:FuzzPlan \
	./collectors/modbus:FuzzDecode \
	./collectors/modbus:FuzzParseConfig \
	./collectors/modbus:FuzzTCPAnswer \
	./collectors/modbus:FuzzRTUCheck \
	./devices/devsim:FuzzPDU \
	./devices/devsim:FuzzRTUStream \
	./gateway/config:FuzzParse \
	./gateway/update:FuzzParseManifest \
	./gateway/update:FuzzBundleArchive \
	./collectors/opcua:FuzzParse \
	./collectors/opcua:FuzzValue

.PHONY: help setup build images test unit fuzz bench demo firmware clean proto

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

setup: ## install host packages and node modules the tests and demo need (idempotent)
	@scripts/setup-host.sh
	@if [ -x scripts/setup-node.sh ]; then scripts/setup-node.sh; fi

build: ## build every command into bin/
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./gateway/cmd/... ./collectors/cmd/... ./devices/cmd/...

images: ## build the collector OCI image archives into dist/images/ and the lab-bench images into dist/bench-images/
	@VERSION=$(VERSION) firmware/build-images.sh

test: setup ## run every test (unit, real-peer integration, short fuzzing) — what CI runs
	@$(GO) mod tidy -diff || { echo 'go.mod/go.sum are not tidy: run go mod tidy and commit the result' >&2; exit 1; }
	$(GO) vet ./...
	$(GO) test -race -timeout 40m -count=1 ./...
	@scripts/fuzz.sh $(FUZZTIME) $(FUZZ_TARGETS)

fuzz: ## fuzz every target for longer (FUZZTIME=5m by default here)
	@scripts/fuzz.sh $(if $(filter command line,$(origin FUZZTIME)),$(FUZZTIME),5m) $(FUZZ_TARGETS)

bench: setup ## run every benchmark (about 20 minutes) and write the report bench/RESULTS.md
	@scripts/bench.sh

demo: setup build images ## the one-command demo: simulated devices, local broker, local containerd
	@scripts/demo.sh

firmware: images build ## signed gateway bundles (amd64, arm64, armv7) into dist/; FIRMWARE_KEY=release.key signs (else a throw-away dev key)
	@FIRMWARE_KEY='$(FIRMWARE_KEY)' firmware/build-bundle.sh $(VERSION)

proto: ## regenerate the Sparkplug B Go code from its .proto (protoc: Debian protobuf-compiler; protoc-gen-go: the go.mod tool)
	@command -v protoc >/dev/null || { echo "proto: protoc not found (apt-get install protobuf-compiler)" >&2; exit 1; }
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	protoc --plugin=protoc-gen-go=$(BIN)/protoc-gen-go --go_out=. --go_opt=module=fieldgate \
		-I collectors/sparkplug/sparkplugpb collectors/sparkplug/sparkplugpb/sparkplug_b.proto

clean: ## remove build output
	rm -rf $(BIN) dist
