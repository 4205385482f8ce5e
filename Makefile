# UVBind and directd. `make run` serves on the default; `make test` runs every test.
SWIFT   ?= swift
BUILD   ?= .build
# Extra flags for `make run`, e.g. make run ARGS='--bind-interface 127.0.0.1 --port 0'
ARGS    ?=

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all build deps run test check-test-env clean

all: build

# libuv comes from Debian's libuv1-dev; install it only when pkg-config cannot find it.
deps:
	@if ! pkg-config --exists libuv 2>/dev/null; then \
		echo "make: libuv not found by pkg-config; installing libuv1-dev"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pkg-config libuv1-dev >/dev/null && \
		pkg-config --exists libuv; \
	fi

build: deps
	$(SWIFT) build -c release --scratch-path $(BUILD)

run: build
	$(BUILD)/release/directd $(ARGS)

test: deps
	$(SWIFT) build --build-tests --scratch-path $(BUILD)
	$(SWIFT) test --skip-build --scratch-path $(BUILD)

clean:
	rm -rf $(BUILD)
