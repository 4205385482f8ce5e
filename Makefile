# UVBind and directd. `make run` serves on the default; `make test` runs every test.
SWIFT     ?= swift
BUILD     ?= .build
# The C library is built apart: it links the Swift standard library statically.
CLIB      ?= .build-clib
# The benchmark's C programs (baseline server, load generator).
BENCHBIN  ?= .build-bench
# make bench QUICK=1: every scenario once, briefly (the test suite runs it).
QUICK     ?=
PREFIX    ?= /usr/local
DESTDIR   ?=
# Extra flags for `make run`, e.g. make run ARGS='--bind-interface 127.0.0.1 --port 0'
ARGS      ?=

# The library version comes from the header, its one source.
version_part = $(shell sed -n 's/^\#define UVBIND_VERSION_$(1) \([0-9]*\)$$/\1/p' Modules/UVBind/uvbind.h)
VERSION   := $(call version_part,MAJOR).$(call version_part,MINOR).$(call version_part,PATCH)
SONAME    := libUVBind.so.$(call version_part,MAJOR)

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all build lib deps run test test-swift test-c test-netns test-netns-if-root test-bench \
	bench bench-deps install install-lib uninstall clean

all: build lib

# libuv comes from Debian's libuv1-dev; install it only when pkg-config cannot find it.
deps:
	@if ! pkg-config --exists libuv 2>/dev/null; then \
		echo "make: libuv not found by pkg-config; installing libuv1-dev"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pkg-config libuv1-dev >/dev/null && \
		pkg-config --exists libuv; \
	fi

# Release, whole-module optimised, with the Swift standard library linked in:
# the installed directd runs on machines without a Swift toolchain. Exclusivity
# is checked at compile time only: the run-time checks cost a fifth of the
# instructions per echo round trip (callgrind; see the README), and every test
# runs the debug build, where they stay on.
build: deps
	$(SWIFT) build -c release --scratch-path $(BUILD) -Xswiftc -static-stdlib -Xswiftc -enforce-exclusivity=unchecked

# libUVBind.so for C hosts: the C API only is exported (uvbind.map), with a soname.
lib: deps
	$(SWIFT) build -c release --product UVBindC --scratch-path $(CLIB) \
		-Xswiftc -static-stdlib \
		-Xlinker -soname=$(SONAME) \
		-Xlinker --version-script=$(CURDIR)/Modules/UVBind/uvbind.map
	cp $(CLIB)/release/libUVBindC.so $(CLIB)/libUVBind.so

run: build
	$(BUILD)/release/directd $(ARGS)

test: deps test-c test-netns-if-root test-bench test-swift

test-swift: deps
	$(SWIFT) build --build-tests --scratch-path $(BUILD)
	$(SWIFT) test --skip-build --scratch-path $(BUILD)

# The C API, from C: installed into a temporary prefix and used through pkg-config.
test-c: lib
	Tests/CAPI/run.sh

# directd on a real multi-interface network (Linux network namespaces): needs root.
test-netns: deps
	@command -v strace >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace >/dev/null; }
	$(SWIFT) build --scratch-path $(BUILD)
	$(SUDO) python3 Tests/netns/netns_suite.py --directd $(BUILD)/debug/directd

test-netns-if-root:
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory test-netns; \
	else echo "netns: skipped: needs root to create network namespaces (run: sudo make test-netns)"; fi

# The benchmark still runs end to end (numbers are not checked: that is make bench).
test-bench:
	$(MAKE) --no-print-directory bench QUICK=1

# The benchmark's peers from Debian (services kept from starting on install) and
# matplotlib for the chart.
BENCH_PACKAGES := iperf3 sockperf socat nginx-light libnginx-mod-stream haproxy
bench-deps: deps
	@missing=$$(for p in $(BENCH_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "make: installing $$missing"; \
		guard=; if [ ! -e /usr/sbin/policy-rc.d ]; then \
			printf '#!/bin/sh\nexit 101\n' | $(SUDO) tee /usr/sbin/policy-rc.d >/dev/null; \
			$(SUDO) chmod +x /usr/sbin/policy-rc.d; guard=1; fi; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		status=$$?; [ -n "$$guard" ] && $(SUDO) rm -f /usr/sbin/policy-rc.d; [ $$status = 0 ]; \
	fi
	@python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install -q matplotlib

bench: build bench-deps
	mkdir -p $(BENCHBIN)
	cc -O2 -Wall -Wextra -Werror -std=c11 Benchmarks/c/uvbase.c $$(pkg-config --cflags --libs libuv) -o $(BENCHBIN)/uvbase
	cc -O2 -Wall -Wextra -Werror -std=c11 Benchmarks/c/loadgen.c $$(pkg-config --cflags --libs libuv) -o $(BENCHBIN)/loadgen
	python3 Benchmarks/bench.py --directd $(BUILD)/release/directd --bin $(BENCHBIN) $(if $(QUICK),--quick)

# The library, header and pkg-config file; `install` adds directd.
install-lib: lib
	install -d $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include
	install -m 755 $(CLIB)/libUVBind.so $(DESTDIR)$(PREFIX)/lib/libUVBind.so.$(VERSION)
	ln -sf libUVBind.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(PREFIX)/lib/libUVBind.so
	install -m 644 Modules/UVBind/uvbind.h $(DESTDIR)$(PREFIX)/include/uvbind.h
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' Modules/UVBind/uvbind.pc.in \
		> $(DESTDIR)$(PREFIX)/lib/pkgconfig/uvbind.pc
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then ldconfig; fi

install: build install-lib
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man8 \
		$(DESTDIR)$(PREFIX)/share/bash-completion/completions \
		$(DESTDIR)$(PREFIX)/share/zsh/site-functions \
		$(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
	install -m 755 $(BUILD)/release/directd $(DESTDIR)$(PREFIX)/bin/directd
	install -m 644 Documentation/directd.8 $(DESTDIR)$(PREFIX)/share/man/man8/directd.8
	$(BUILD)/release/directd --generate-completion-script bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/directd
	$(BUILD)/release/directd --generate-completion-script zsh > $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_directd
	$(BUILD)/release/directd --generate-completion-script fish > $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/directd.fish
# systemd: the unit (ExecStart at this prefix), the example socket, and the
# example config unless one is there already (it is the operator's).
	install -d $(DESTDIR)$(PREFIX)/lib/systemd/system
	sed 's|/usr/local/bin/directd|$(PREFIX)/bin/directd|' packaging/directd.service \
		> $(DESTDIR)$(PREFIX)/lib/systemd/system/directd.service
	chmod 644 $(DESTDIR)$(PREFIX)/lib/systemd/system/directd.service
	install -m 644 packaging/directd.socket $(DESTDIR)$(PREFIX)/lib/systemd/system/directd.socket
	[ -e $(DESTDIR)/etc/directd/directd.json ] || install -D -m 644 packaging/directd.json $(DESTDIR)/etc/directd/directd.json

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/directd \
		$(DESTDIR)$(PREFIX)/share/man/man8/directd.8 \
		$(DESTDIR)$(PREFIX)/share/bash-completion/completions/directd \
		$(DESTDIR)$(PREFIX)/share/zsh/site-functions/_directd \
		$(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/directd.fish \
		$(DESTDIR)$(PREFIX)/lib/libUVBind.so $(DESTDIR)$(PREFIX)/lib/$(SONAME) \
		$(DESTDIR)$(PREFIX)/lib/libUVBind.so.$(VERSION) \
		$(DESTDIR)$(PREFIX)/include/uvbind.h $(DESTDIR)$(PREFIX)/lib/pkgconfig/uvbind.pc
# systemd units; /etc/directd/directd.json stays (it is the operator's).
	rm -f $(DESTDIR)$(PREFIX)/lib/systemd/system/directd.service \
		$(DESTDIR)$(PREFIX)/lib/systemd/system/directd.socket
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then ldconfig; fi

clean:
	rm -rf $(BUILD) $(CLIB) $(BENCHBIN)
