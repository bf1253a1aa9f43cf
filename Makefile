# rackboot: `make run` runs the appliance, `make test` runs the whole suite.
SHELL := /bin/bash
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
DATA_DIR ?= $(CURDIR)/data
# The interface rackboot serves on: by default the one of the default route.
IFACE ?= $(shell ip -4 route show default 2>/dev/null | awk '{for (i=1;i<NF;i++) if ($$i=="dev") {print $$(i+1); exit}}')
DHCP_MODE ?= proxy
# The API and web UI over TLS (empty: on the boot port, in clear).
API_ADDR ?= :8443
E2E_TIMEOUT ?= 40m
# make install puts bin/rackboot in $(DESTDIR)$(PREFIX)/bin and the systemd unit in
# $(DESTDIR)$(UNIT_DIR).
PREFIX ?= /usr/local
UNIT_DIR ?= /etc/systemd/system
# The programs every agent ramdisk carries, cross-compiled for bin/rackboot to embed;
# rebuilt when a Go file or go.mod changes.
PAYLOAD := images/ramdisk/payload/files
GO_SOURCES := $(wildcard $(shell git ls-files -co --exclude-standard '*.go' 2>/dev/null)) go.mod go.sum

.PHONY: help build payload install run firmware ramdisks lab test unit integration e2e deps fuzz soak bench clean

help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: $(PAYLOAD)/.stamp ## build bin/rackboot, carrying the agent ramdisks' programs for amd64 and arm64
	@mkdir -p bin
	CGO_ENABLED=0 go build -ldflags '$(LDFLAGS)' -o bin/rackboot ./cmd/rackboot

payload: ## cross-compile the agent and u-root's init, gosh, ls, cat, dmesg, ip, ps for amd64 and arm64 (make build embeds them)
	go run ./images/ramdisk/payload/mkpayload -o $(PAYLOAD)
	@touch $(PAYLOAD)/.stamp

$(PAYLOAD)/.stamp: $(GO_SOURCES)
	@$(MAKE) --no-print-directory payload

install: build ## install bin/rackboot in PREFIX/bin (/usr/local) and the systemd unit in UNIT_DIR (/etc/systemd/system); DESTDIR honoured
	install -D -m 0755 bin/rackboot $(DESTDIR)$(PREFIX)/bin/rackboot
	@mkdir -p $(DESTDIR)$(UNIT_DIR)
	sed 's|/usr/local/bin/rackboot|$(PREFIX)/bin/rackboot|g' contrib/rackboot.service > $(DESTDIR)$(UNIT_DIR)/rackboot.service
	@chmod 0644 $(DESTDIR)$(UNIT_DIR)/rackboot.service
	@echo "installed; then: put the config in /etc/rackboot/rackboot.yaml, systemctl daemon-reload, systemctl enable --now rackboot"

firmware: build ## fetch and verify the boot loaders from Debian's archive into DATA_DIR (and build AArch64's HTTP-boot GRUB with grub-common's grub-mkimage)
	@command -v grub-mkimage >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq --no-install-recommends grub-common >/dev/null; } || echo "no grub-mkimage (apt-get install grub-common): AArch64 UEFI HTTP boot will not work"
	bin/rackboot firmware fetch --data-dir $(DATA_DIR)

run: firmware ramdisks ## run rackboot on IFACE (DHCP_MODE=proxy by default; API_ADDR=:8443 for the API over TLS; needs root)
	@if [ "$$(id -u)" != 0 ]; then echo "rackboot serves DHCP (67, 4011) and TFTP (69): run as root (sudo make run)"; exit 1; fi
	@if [ -z "$(IFACE)" ]; then echo "no default route: say which interface, e.g. make run IFACE=eth0"; exit 1; fi
	bin/rackboot serve --data-dir $(DATA_DIR) --interface $(IFACE) --dhcp-mode $(DHCP_MODE) $(if $(API_ADDR),--api-addr $(API_ADDR)) $(ARGS)

ramdisks: build ## build the agent ramdisks (amd64, arm64) into DATA_DIR/artifacts
	bin/rackboot ramdisk build --arch all --data-dir $(DATA_DIR)

lab: deps firmware ramdisks ## a virtual rack of QEMU nodes booting through rackboot (root; Ctrl-C ends it)
	bin/rackboot lab --data-dir $(DATA_DIR)

deps: ## install the Debian packages the tests use (QEMU, firmware, DHCP/TFTP clients, ipmi_sim, libvirtd, OpenStack Ironic)
	bash scripts/install-test-deps.sh

unit: ## unit tests, vet and formatting (no root needed)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	go vet ./...
	go vet -tags integration,e2e ./...
	go test -race -count=1 ./...

integration: deps ## tests with real clients in network namespaces (root)
	go test -tags integration -count=1 -p 1 -timeout 30m ./...

e2e: deps build ## QEMU boots of real firmware through rackboot (root, slow)
	go test -tags e2e -count=1 -timeout $(E2E_TIMEOUT) -v ./e2e/ 2>&1 | tee e2e.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok)|payload up|\.go:[0-9]+:' ; exit $${PIPESTATUS[0]}

test: unit integration fuzz e2e ## the whole suite, as CI runs it

FUZZTIME ?=
fuzz: ## run every fuzz target for FUZZTIME (default: 120 s of fuzzing shared by the targets, at least 2 s each; crashers land in the package's testdata/fuzz)
	FUZZTIME=$(FUZZTIME) bash scripts/fuzz.sh

soak: deps build ## the long variants, not in CI: every fuzz target for 2 minutes, the power poller over 10,000 simulated BMCs for 30 rounds, 1,000 + 100 kill -9s of rackboot serve under DHCP clients, 300 kill -9s and 300 ended database sessions of two servers on PostgreSQL, 100,000 bad DHCP packets and 30,000 bad TFTP clients, a simulated year of a 5,000-node site's boots, 404 kills of the agent mid-deploy, the VM scenario with the AArch64 VM deployed too (root)
	RACKBOOT_SOAK=1 go test -count=1 -timeout 30m -run 'Soak' -v ./power/poll
	RACKBOOT_SOAK=1 go test -tags integration -count=1 -timeout 40m -run 'TestKill9UnderDHCPLoad|TestTwoServersFaults' -v ./cmd/rackboot/
	RACKBOOT_SOAK=1 go test -tags integration -count=1 -timeout 10m -run 'TestIntegrationBadTraffic' -v ./dhcp/
	RACKBOOT_SOAK=1 go test -count=1 -timeout 10m -run 'TestBadTraffic' -v ./tftp/
	RACKBOOT_SOAK=1 go test -tags integration -count=1 -timeout 60m -run 'TestSimulatedYear' -v ./store/sqlite/
	RACKBOOT_SOAK=1 go test -tags integration -count=1 -timeout 60m -run 'TestAgentFaults/kills' -v ./agent/deploy/
	FUZZTIME=2m bash scripts/fuzz.sh
	RACKBOOT_SOAK=1 go test -tags e2e -count=1 -timeout 45m -run 'TestVMs' -v ./e2e/

bench: ## Go benchmarks, then every bench/*.sh at its defaults beside Kea, dnsmasq, tftpd-hpa, atftpd, nginx, dd (root; installs them with apt; SMOKE=1 for tiny runs); figures in docs/benchmarks.md
	go test -run '^$$' -bench . -benchtime 2x ./...
	@rc=0; for s in bench/*.sh; do echo "== $$s"; bash $$s || { echo "$$s failed"; rc=1; }; done; exit $$rc

clean: ## remove build outputs (not DATA_DIR)
	rm -rf bin e2e.log $(PAYLOAD)/*.tar.zst $(PAYLOAD)/.stamp
