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

.PHONY: all build check-size lib deps test-deps run test test-swift test-c test-netns test-netns-if-root test-systemd test-systemd-if-root deb deb-deps test-bench \
	bench bench-deps prometheus-deps test-prometheus install install-lib uninstall clean fuzz fuzz-build test-fuzz test-sanitize

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
# --icf=all folds identical functions (generic specialisations, thunks) as
# Apple's linker does by default: 190 KB off the stripped binary, which
# keeps it under check-size's 16 MB with metrics, rate limits and upgrades in.
build: deps
	$(SWIFT) build -c release --scratch-path $(BUILD) -Xswiftc -static-stdlib -Xswiftc -enforce-exclusivity=unchecked \
		-Xlinker --icf=all

# Issue 22: the release directd, stripped, stays at most 16 MB (it was 60 MB, 34 MB of
# it ICU's data, while TOMLKit brought full Foundation in). Stripped on a copy.
MAX_DIRECTD_BYTES ?= 16000000
check-size: build
	@copy=$$(mktemp); trap 'rm -f "$$copy"' EXIT; \
	strip -o "$$copy" $(BUILD)/release/directd && size=$$(stat -c %s "$$copy") && \
	if [ "$$size" -le $(MAX_DIRECTD_BYTES) ]; then echo "check-size: directd stripped is $$size bytes (at most $(MAX_DIRECTD_BYTES))"; \
	else echo "check-size: directd stripped is $$size bytes, over $(MAX_DIRECTD_BYTES)"; exit 1; fi; \
	if nm $(BUILD)/release/directd | grep -q 'icudt[0-9]*_dat'; then echo "check-size: ICU's data is linked in (full Foundation?)"; exit 1; fi

# libUVBind.so for C hosts: the C API only is exported (uvbind.map), with a soname.
lib: deps
	$(SWIFT) build -c release --product UVBindC --scratch-path $(CLIB) \
		-Xswiftc -static-stdlib \
		-Xlinker -soname=$(SONAME) \
		-Xlinker --version-script=$(CURDIR)/Modules/UVBind/uvbind.map
	cp $(CLIB)/release/libUVBindC.so $(CLIB)/libUVBind.so

run: build
	$(BUILD)/release/directd $(ARGS)

test: deps test-c test-netns-if-root test-systemd-if-root test-bench test-swift test-prometheus test-fuzz check-size

# Programs the Swift tests use when present, installed on a fresh machine:
# systemd's tools (systemd-socket-activate, systemd-analyze), strace, prlimit
# (util-linux), and nginx/haproxy (the PROXY protocol consumers, as for bench).
TEST_PACKAGES := systemd strace util-linux iproute2
test-deps: deps
	@missing=$$(for p in $(TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "make: installing $$missing for the tests"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

test-swift: test-deps bench-deps
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

# directd under a real systemd 252 (PID 1 in a sandbox of namespaces, an overlay root and
# a cgroup of its own; Tests/systemd/sandbox.py), installed from the Debian packages as an
# operator would, then upgraded to a second build with a newer revision and purged: needs root.
test-systemd: deb
	DEB_BUILD_OPTIONS=noddebs $(MAKE) --no-print-directory deb DEBDIR=$(DEBDIR)/upgrade DEB_REVISION=$(DEB_REVISION).1 DEB_LINT= >/dev/null
	$(SUDO) python3 Tests/systemd/systemd_suite.py --deb $(DEBDIR) --upgrade-deb $(DEBDIR)/upgrade

test-systemd-if-root:
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory test-systemd; \
	else echo "systemd: skipped: needs root to boot systemd in namespaces (run: sudo make test-systemd)"; fi

# The benchmark still runs end to end (numbers are not checked: that is make bench).
test-bench:
	$(MAKE) --no-print-directory bench QUICK=1

# The benchmark's peers from Debian (services kept from starting on install) and
# matplotlib for the chart.
BENCH_PACKAGES := iperf3 sockperf socat nginx-light libnginx-mod-stream haproxy
bench-deps: deps
	@$(call install_without_services,$(BENCH_PACKAGES))
	@python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install -q matplotlib

# Debian's packages in $(1) that are missing, installed with their services kept
# from starting (a policy-rc.d that refuses, for the length of the install).
define install_without_services
	missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "make: installing $$missing"; \
		guard=; if [ ! -e /usr/sbin/policy-rc.d ]; then \
			printf '#!/bin/sh\nexit 101\n' | $(SUDO) tee /usr/sbin/policy-rc.d >/dev/null; \
			$(SUDO) chmod +x /usr/sbin/policy-rc.d; guard=1; fi; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		status=$$?; [ -n "$$guard" ] && $(SUDO) rm -f /usr/sbin/policy-rc.d; [ $$status = 0 ]; \
	fi
endef

# A real Prometheus (Debian's, its service kept from starting) scrapes directd
# on loopback and its HTTP API is queried: Tests/prometheus/prometheus_test.py.
PROMETHEUS_PACKAGES := prometheus
prometheus-deps: deps
	@$(call install_without_services,$(PROMETHEUS_PACKAGES))

test-prometheus: prometheus-deps
	$(SWIFT) build --scratch-path $(BUILD)
	python3 Tests/prometheus/prometheus_test.py --directd $(BUILD)/debug/directd

bench: build bench-deps
	mkdir -p $(BENCHBIN)
	cc -O2 -Wall -Wextra -Werror -std=c11 Benchmarks/c/uvbase.c $$(pkg-config --cflags --libs libuv) -o $(BENCHBIN)/uvbase
	cc -O2 -Wall -Wextra -Werror -std=c11 Benchmarks/c/loadgen.c $$(pkg-config --cflags --libs libuv) -o $(BENCHBIN)/loadgen
	python3 Benchmarks/bench.py --directd $(BUILD)/release/directd --bin $(BENCHBIN) $(if $(QUICK),--quick)

# Fuzzing: libFuzzer targets built with swiftc -sanitize=fuzzer,address (no SwiftPM).
# A target is a harness Tests/Fuzz/<name>.swift (defining LLVMFuzzerTestOneInput) with
# seeds in Tests/Fuzz/corpus/<name>/; to add one, add the file and its name below.
FUZZ_TARGETS  ?= bindvalue allowlist config upstream
# make fuzz: seconds per target. make test-fuzz: seconds in all, shared by the targets.
FUZZ_SECONDS  ?= 300
FUZZ_TEST_SECONDS ?= 20
# Invariants checked besides "no crash" (see Tests/Fuzz/bindvalue.swift):
# CHECK_ESCAPED_MESSAGES (errors name values with control characters escaped) and
# CHECK_SYNTAX_BEFORE_MACHINE (every syntax error comes from BindValue(parsing:)).
FUZZ_CHECKS   ?= CHECK_ESCAPED_MESSAGES CHECK_SYNTAX_BEFORE_MACHINE
FUZZBUILD     ?= .build-fuzz
SWIFTC        ?= swiftc

fuzz_objects  := $(FUZZBUILD)/obj/UVBind.o $(FUZZBUILD)/obj/directd.o \
	$(FUZZBUILD)/obj/ArgumentParser.o $(FUZZBUILD)/obj/ArgumentParserToolInfo.o
fuzz_binaries := $(FUZZ_TARGETS:%=$(FUZZBUILD)/bin/fuzz-%)
fuzz_support  := $(wildcard Tests/Fuzz/Support/*.swift)
# Optimised (libFuzzer needs the speed; -O keeps Swift's overflow and bounds traps),
# with -enable-testing so that harnesses reach directd's internal types.
fuzz_swiftc    = $(SWIFTC) -swift-version 6 -O -g -enable-testing -package-name UVBind \
	-I $(FUZZBUILD)/modules $(addprefix -I ,$(wildcard Modules/*)) $$(pkg-config --cflags-only-I libuv) \
	-module-cache-path $(FUZZBUILD)/module-cache
fuzz_instrument = -sanitize=fuzzer,address $(FUZZ_CHECKS:%=-D %)

fuzz-build: deps $(fuzz_binaries)

# Rebuild everything when the flags change: the file is rewritten (while make reads this
# Makefile) only when a fuzz goal is asked for and the flags differ from the last build's.
ifneq ($(filter fuzz fuzz-build test-fuzz test,$(MAKECMDGOALS)),)
$(shell mkdir -p $(FUZZBUILD) && echo '$(fuzz_swiftc) $(fuzz_instrument)' | cmp -s - $(FUZZBUILD)/flags \
	|| echo '$(fuzz_swiftc) $(fuzz_instrument)' > $(FUZZBUILD)/flags)
endif

# swift-argument-parser from the package's own pin, compiled once, not instrumented.
$(FUZZBUILD)/obj/ArgumentParser.o $(FUZZBUILD)/obj/ArgumentParserToolInfo.o &: Package.swift
	$(SWIFT) package resolve --scratch-path $(FUZZBUILD)/spm
	@mkdir -p $(FUZZBUILD)/obj $(FUZZBUILD)/modules
	find $(FUZZBUILD)/spm/checkouts/swift-argument-parser/Sources/ArgumentParserToolInfo -name '*.swift' -print0 | \
		xargs -0 $(fuzz_swiftc) -suppress-warnings -c -wmo -parse-as-library -module-name ArgumentParserToolInfo \
		-emit-module-path $(FUZZBUILD)/modules/ArgumentParserToolInfo.swiftmodule -o $(FUZZBUILD)/obj/ArgumentParserToolInfo.o
	find $(FUZZBUILD)/spm/checkouts/swift-argument-parser/Sources/ArgumentParser -name '*.swift' -print0 | \
		xargs -0 $(fuzz_swiftc) -suppress-warnings -c -wmo -parse-as-library -module-name ArgumentParser \
		-emit-module-path $(FUZZBUILD)/modules/ArgumentParser.swiftmodule -o $(FUZZBUILD)/obj/ArgumentParser.o
	@touch $(FUZZBUILD)/obj/ArgumentParserToolInfo.o $(FUZZBUILD)/obj/ArgumentParser.o

# The targets' sources sit in folders by concern: every Swift file below each.
uvbind_sources  := $(shell find Sources/UVBind -name '*.swift' | sort)
directd_sources := $(shell find Sources/directd -name '*.swift' | sort)

$(FUZZBUILD)/obj/UVBind.o: $(uvbind_sources) $(wildcard Modules/*/*) $(FUZZBUILD)/flags
	@mkdir -p $(FUZZBUILD)/obj $(FUZZBUILD)/modules
	$(fuzz_swiftc) $(fuzz_instrument) -c -wmo -parse-as-library -module-name UVBind \
		-emit-module-path $(FUZZBUILD)/modules/UVBind.swiftmodule $(uvbind_sources) -o $@
	@touch $@  # swiftc leaves an unchanged object's time alone

# The whole directd module, as SwiftPM builds it for its tests: its @main renamed so
# that libFuzzer's main is the program's.
$(FUZZBUILD)/obj/directd.o: $(directd_sources) $(FUZZBUILD)/obj/UVBind.o \
		$(FUZZBUILD)/obj/ArgumentParser.o $(FUZZBUILD)/flags
	$(fuzz_swiftc) $(fuzz_instrument) -c -wmo -module-name directd \
		-Xfrontend -entry-point-function-name -Xfrontend directd_main \
		-emit-module-path $(FUZZBUILD)/modules/directd.swiftmodule $(directd_sources) -o $@
	@touch $@

# Test sources a harness shares instead of copying them (the bind value's made-up machine).
fuzz_extra_bindvalue := Tests/UVBindTests/Fixtures.swift

$(FUZZBUILD)/bin/fuzz-%: Tests/Fuzz/%.swift $(fuzz_support) $(fuzz_objects) $(FUZZBUILD)/flags
	@mkdir -p $(FUZZBUILD)/bin
	$(fuzz_swiftc) $(fuzz_instrument) -parse-as-library -module-name fuzz_$* -use-ld=lld \
		$< $(fuzz_extra_$*) $(fuzz_support) $(fuzz_objects) $$(pkg-config --libs libuv) -o $@

# Each target for FUZZ_SECONDS, on a scratch copy of its seeds (in $(FUZZBUILD)/run/).
fuzz: fuzz-build
	@status=0; for target in $(FUZZ_TARGETS); do \
		Tests/Fuzz/run.sh $(FUZZBUILD)/bin/fuzz-$$target Tests/Fuzz/corpus/$$target \
			$(FUZZBUILD)/run/$$target $(FUZZ_SECONDS) || status=1; \
	done; exit $$status

# Every target briefly (every seed, then new inputs); any crash fails.
test-fuzz: fuzz-build
	@seconds=$$(( $(FUZZ_TEST_SECONDS) / $(words $(FUZZ_TARGETS)) )); \
	status=0; for target in $(FUZZ_TARGETS); do \
		Tests/Fuzz/run.sh $(FUZZBUILD)/bin/fuzz-$$target Tests/Fuzz/corpus/$$target \
			$(FUZZBUILD)/test/$$target $$seconds || status=1; \
	done; exit $$status

# The Swift tests under AddressSanitizer (with LeakSanitizer), then ThreadSanitizer,
# each in its own build directory. The directd processes that the tests start are the
# sanitized build too. Every report, theirs included, goes to $(SANLOGS); any report
# fails the target, and is printed. Skipped under ASan: the tests that measure resident
# memory (ASan's quarantine and shadow memory make RSS meaningless), and the one that
# runs directd under strace (LeakSanitizer cannot work under ptrace).
SANLOGS         ?= .build-sanitizer-logs
ASAN_SKIP       ?= manyShortConnectionsLeaveNothingBehind clientsThatNeverReadStayWithinTheMemoryBound memoryLimitMakesReadersWaitAndThenResume spliceModeMovesPayloadWithSpliceAndNoReadsOrWrites
# Skipped under TSan: the heaviest transfers and loads, which ThreadSanitizer slows
# past their bounded waits (each found no race in a run of its own), and the
# resident-memory tests (shadow memory).
TSAN_SKIP       ?= reloadsUnderLoadRefuseNothingAndKeepSessions relaysManyConcurrentConnectionsIntactBothWays \
	quarterGigabyteEachWayArrivesIntactOverConcurrentConnections clientsThatNeverReadStayWithinTheMemoryBound \
	memoryLimitMakesReadersWaitAndThenResume unchangedListenersKeepTheirSocketAndPendingClients \
	spliceModeMovesPayloadWithSpliceAndNoReadsOrWrites manyShortConnectionsLeaveNothingBehind
sanitize_env     = ASAN_OPTIONS=log_path=$(CURDIR)/$(SANLOGS)/asan:detect_leaks=1 \
	LSAN_OPTIONS=suppressions=$(CURDIR)/Tests/Fuzz/lsan.supp:print_suppressions=0 \
	TSAN_OPTIONS=log_path=$(CURDIR)/$(SANLOGS)/tsan
test-sanitize: deps
	@rm -rf $(SANLOGS); mkdir -p $(SANLOGS); status=0; \
	for sanitizer in address thread; do \
		scratch=.build-$$(echo $$sanitizer | cut -c1)san; \
		echo "test-sanitize: $$sanitizer ($$scratch)"; \
		$(SWIFT) build --build-tests --sanitize=$$sanitizer --scratch-path $$scratch || { status=1; continue; }; \
		case $$sanitizer in address) skip="$(ASAN_SKIP:%=--skip %)";; thread) skip="$(TSAN_SKIP:%=--skip %)";; esac; \
		$(sanitize_env) $(SWIFT) test --skip-build --sanitize=$$sanitizer --scratch-path $$scratch $$skip || status=1; \
	done; \
	reports=$$(grep -l 'ERROR: \|WARNING: ThreadSanitizer' $(SANLOGS)/* 2>/dev/null); \
	if [ -n "$$reports" ]; then \
		for report in $$reports; do echo "==> $$report"; cat "$$report"; done; \
		echo "test-sanitize: $$(echo $$reports | wc -w) sanitizer report(s) in $(SANLOGS)"; status=1; \
	else echo "test-sanitize: no sanitizer reports"; fi; \
	exit $$status

# Debian packages: directd, libuvbind0 and libuvbind-dev, from packaging/debian/, built
# in $(DEBDIR)/src (the top level stays as it is) and left in $(DEBDIR). The upstream
# version is the header's; DEB_REVISION gives a newer package of the same version (an
# entry is added to the build's copy of the changelog). lintian must pass: no error,
# no warning.
DEBDIR       ?= .build-deb
DEB_REVISION ?= 1
# make deb DEB_LINT=  (empty): without lintian (test-systemd's second build, the same files again).
DEB_LINT     ?= 1
DEB_VERSION  := $(VERSION)-$(DEB_REVISION)
DEB_PACKAGES := debhelper dpkg-dev lintian fakeroot
debsrc        = $(DEBDIR)/src/directd-$(VERSION)
lintian_fails = error,warning
deb-deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "make: installing $$missing"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

deb: build lib deb-deps
	@top=$$(dpkg-parsechangelog -l packaging/debian/changelog -S Version); case $$top in \
		$(VERSION)-*) ;; \
		*) echo "make deb: packaging/debian/changelog is at $$top, uvbind.h at $(VERSION): add an entry"; exit 1;; esac
	rm -rf $(DEBDIR)/src $(DEBDIR)/*.deb && mkdir -p $(debsrc)
	cp -r packaging/debian $(debsrc)/debian
	# The package's unit: directd at /usr/bin, and its man page (installed with it) for systemctl help.
	sed -e 's|/usr/local/bin/directd|/usr/bin/directd|' -e '/^Description=/a Documentation=man:directd(8)' \
		packaging/directd.service > $(debsrc)/debian/directd.service
	@if [ "$$(dpkg-parsechangelog -l packaging/debian/changelog -S Version)" != "$(DEB_VERSION)" ]; then \
		{ printf 'directd (%s) unstable; urgency=medium\n\n  * Rebuilt with Debian revision %s (make deb DEB_REVISION=%s).\n\n -- %s  %s\n\n' \
			"$(DEB_VERSION)" "$(DEB_REVISION)" "$(DEB_REVISION)" \
			"$$(dpkg-parsechangelog -l packaging/debian/changelog -S Maintainer)" "$$(date -R)"; \
		  cat packaging/debian/changelog; } > $(debsrc)/debian/changelog; fi
	cd $(debsrc) && CHECKOUT=$(CURDIR) dpkg-buildpackage -b -us -uc
	$(if $(DEB_LINT),lintian --fail-on $(lintian_fails) $(DEBDIR)/src/directd_$(DEB_VERSION)_*.changes)
	mv $(DEBDIR)/src/*.deb $(DEBDIR)/
	@ls $(DEBDIR)/*_$(DEB_VERSION)_*.deb

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
	rm -rf $(BUILD) $(CLIB) $(BENCHBIN) $(FUZZBUILD) .build-asan .build-tsan $(SANLOGS) $(DEBDIR)
