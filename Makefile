# Outbox reference system: order-service and inventory-service in C.
#   make           build bin/order-service and bin/inventory-service
#   make test      install what is missing, build with ASan/UBSan, run every suite
#   make demo      run the system on a local Postgres + nats-server
#                  (HA=1: a 3-node JetStream cluster and 2 instances of each service)
#   make bench     benchmarks against raw pgbench / raw JetStream publish
#   make fuzz      each libFuzzer harness for FUZZ_SECS (60) seconds
#   make deps      install the Debian packages the above need

CC      ?= cc
PKGS    := libmicrohttpd libpq libnats jansson
WARN    := -std=c11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
           -Wmissing-prototypes -Wformat=2 -Wwrite-strings
CFLAGS_BASE = $(WARN) -D_GNU_SOURCE -pthread -Icommon -Iorder-service -Iinventory-service \
           $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LIBS     = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -pthread
TESTLIBS = $(shell pkg-config --libs check 2>/dev/null)

RELEASE_FLAGS := -O2 -g
ASAN_FLAGS    := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
                 -fno-sanitize-recover=undefined

COMMON_SRC    := $(wildcard common/*.c)
ORDER_SRC     := $(filter-out order-service/main.c,$(wildcard order-service/*.c))
INVENTORY_SRC := $(filter-out inventory-service/main.c,$(wildcard inventory-service/*.c))
UNIT_SRC      := $(wildcard tests/unit/*.c)
INTEG_SRC     := $(wildcard tests/integration/*.c) $(wildcard tests/support/*.c)

obj = $(patsubst %.c,build/$(1)/%.o,$(2))

.PHONY: all deps test demo demo-stop bench compose-test clean check-build fuzz fuzz-build
all: bin/order-service bin/inventory-service

# --- release build -----------------------------------------------------
bin/order-service: $(call obj,release,$(COMMON_SRC) $(ORDER_SRC) order-service/main.c)
	@mkdir -p bin
	$(CC) $(RELEASE_FLAGS) -o $@ $^ $(LIBS)

bin/inventory-service: $(call obj,release,$(COMMON_SRC) $(INVENTORY_SRC) inventory-service/main.c)
	@mkdir -p bin
	$(CC) $(RELEASE_FLAGS) -o $@ $^ $(LIBS)

build/release/%.o: %.c $(wildcard common/*.h order-service/*.h inventory-service/*.h)
	@mkdir -p $(dir $@)
	@echo "  CC $<"; $(CC) $(CFLAGS_BASE) $(RELEASE_FLAGS) -c -o $@ $<

# --- sanitizer build for tests -----------------------------------------
build/asan/%.o: %.c $(wildcard common/*.h order-service/*.h inventory-service/*.h tests/*/*.h)
	@mkdir -p $(dir $@)
	@echo "  CC $<"; $(CC) $(CFLAGS_BASE) -Itests $(ASAN_FLAGS) -c -o $@ $<

build/asan/bin/order-service: $(call obj,asan,$(COMMON_SRC) $(ORDER_SRC) order-service/main.c)
	@mkdir -p $(dir $@)
	$(CC) $(ASAN_FLAGS) -o $@ $^ $(LIBS)

build/asan/bin/inventory-service: $(call obj,asan,$(COMMON_SRC) $(INVENTORY_SRC) inventory-service/main.c)
	@mkdir -p $(dir $@)
	$(CC) $(ASAN_FLAGS) -o $@ $^ $(LIBS)

build/asan/run-unit: $(call obj,asan,$(COMMON_SRC) $(ORDER_SRC) $(INVENTORY_SRC) $(UNIT_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(ASAN_FLAGS) -o $@ $^ $(LIBS) $(TESTLIBS)

build/asan/run-integration: $(call obj,asan,$(COMMON_SRC) $(ORDER_SRC) $(INVENTORY_SRC) $(INTEG_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(ASAN_FLAGS) -o $@ $^ $(LIBS) $(TESTLIBS)

check-build: build/asan/bin/order-service build/asan/bin/inventory-service \
             build/asan/run-unit build/asan/run-integration all

# --- libFuzzer harnesses (clang from Debian) ---------------------------
FUZZ_CC     ?= clang-14
FUZZ_SAN    := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_NAMES  := order event http config
FUZZ_BINS   := $(addprefix build/fuzz/bin/fuzz_,$(FUZZ_NAMES))
FUZZ_SECS   ?= 60

build/fuzz/%.o: %.c $(wildcard common/*.h order-service/*.h inventory-service/*.h)
	@mkdir -p $(dir $@)
	@echo "  FUZZCC $<"; $(FUZZ_CC) $(CFLAGS_BASE) -g -O1 -fno-omit-frame-pointer $(FUZZ_SAN) \
	    -fsanitize=fuzzer-no-link -c -o $@ $<

build/fuzz/bin/fuzz_%: build/fuzz/tests/fuzz/fuzz_%.o $(call obj,fuzz,$(COMMON_SRC) $(ORDER_SRC) $(INVENTORY_SRC))
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -fsanitize=fuzzer $(FUZZ_SAN) -o $@ $^ $(LIBS)

fuzz-build: $(FUZZ_BINS)
.PRECIOUS: build/fuzz/%.o  # not intermediate: kept between runs

fuzz: deps
	@$(MAKE) --no-print-directory fuzz-build
	@FUZZ_SECS=$(FUZZ_SECS) scripts/fuzz $(FUZZ_NAMES)

# --- the commands of the README ----------------------------------------
deps:
	@scripts/deps

test: deps
	@$(MAKE) -j$$(nproc) --no-print-directory check-build fuzz-build
	@scripts/test

demo:
	@scripts/deps demo
	@$(MAKE) --no-print-directory all
	@HA=$(HA) scripts/demo

demo-stop:
	@scripts/demo stop

bench: deps
	@$(MAKE) --no-print-directory all
	@scripts/bench

compose-test:
	@scripts/deps compose
	@tests/compose/run
	@tests/compose/run --ha

clean:
	rm -rf build bin
