# mwserve: one non-recursive Makefile. `make help` lists the targets.
#
#   make                 build build/libmw.a and build/bin/{mw-worker,mw-coordinator,mwctl,mw-agent}
#   make test            deps + unit + integration (real Redis and Kafka) + fuzz corpus replay
#   make run             deps + a local Redis, Kafka and mwserve cluster (ops/run-local.sh)
#   make SANITIZE=address,undefined test   the same, built with sanitizers (in build/san)

.DEFAULT_GOAL := all
.SECONDARY:
SHELL := /bin/bash

CC ?= cc
FUZZ_CC ?= clang
SANITIZE ?=
BUILD ?= $(if $(SANITIZE),build/san,build)

# Goals that need ops/deps.sh run it here, while make reads this file, so that
# the pkg-config lines below already see the libraries it installs.
DEPS_GOALS := deps test integration bench run
ifneq ($(filter $(DEPS_GOALS),$(MAKECMDGOALS)),)
$(shell ops/deps.sh >&2)
ifneq ($(.SHELLSTATUS),0)
$(error ops/deps.sh failed (see above); fix that and run `make deps` again)
endif
endif

# Every goal but these compiles and links: a missing library stops it here, with
# the Debian package that provides it, instead of as undefined references.
NO_BUILD_GOALS := help clean deps format format-check lint gpu-info
TEST_GOALS := test unit integration bench
pc_package = $(if $(shell pkg-config --exists $(1) 2>/dev/null || echo no),$(2))
ifneq ($(filter-out $(NO_BUILD_GOALS),$(or $(MAKECMDGOALS),$(.DEFAULT_GOAL))),)
MISSING_PKGS := $(strip $(call pc_package,rdkafka,librdkafka-dev) \
    $(call pc_package,hiredis,libhiredis-dev) $(call pc_package,libcjson,libcjson-dev) \
    $(call pc_package,libmicrohttpd,libmicrohttpd-dev) $(call pc_package,openblas,libopenblas-dev) \
    $(if $(filter $(TEST_GOALS),$(MAKECMDGOALS)),$(call pc_package,cmocka,libcmocka-dev)))
ifneq ($(MISSING_PKGS),)
$(error missing Debian package(s) $(MISSING_PKGS) (pkg-config cannot find them); `make deps` installs them)
endif
endif

PKGS := rdkafka hiredis libcjson libmicrohttpd
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
BLAS_LIBS := -lopenblas

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 -Werror
# Includes name their room: "err.h" (common/), "world/world.h" (common/world/),
# "topics/record.h" (from the top); a file's own folder needs no prefix.
CPPFLAGS += -D_GNU_SOURCE -Icommon -I. -Itests/support -I$(BUILD)/gen $(PKG_CFLAGS)
CFLAGS ?= -O2 -g
CFLAGS += -std=c11 $(WARN) -MMD -MP -pthread
LDLIBS += $(PKG_LIBS) $(BLAS_LIBS) -lm -ldl -pthread

ifneq ($(SANITIZE),)
CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZE)
endif

# --- CUDA / NCCL / cuBLAS: detected, never required -------------------------
CUDA_HOME ?= $(firstword $(wildcard /usr/local/cuda /opt/cuda))
HAVE_CUDA := $(if $(and $(CUDA_HOME),$(wildcard $(CUDA_HOME)/include/cuda_runtime.h)),1,)
# NCCL_HOME / CUBLAS_HOME: installs outside CUDA_HOME (e.g. pip's nvidia/* wheels), with
# $(X_HOME)/include and $(X_HOME)/lib (which needs the unversioned libnccl.so / libcublas.so).
# By default the wheels that `make deps` unpacks into .cache/gpu when nvcc has no NCCL.
GPU_CACHE := $(CURDIR)/.cache/gpu
NCCL_HOME ?= $(if $(wildcard $(GPU_CACHE)/.done),$(GPU_CACHE))
CUBLAS_HOME ?= $(if $(wildcard $(GPU_CACHE)/.done),$(GPU_CACHE))
HAVE_NCCL := $(if $(HAVE_CUDA),$(if $(wildcard $(CUDA_HOME)/include/nccl.h /usr/include/nccl.h $(if $(NCCL_HOME),$(NCCL_HOME)/include/nccl.h)),1,),)
HAVE_CUBLAS := $(if $(HAVE_CUDA),$(if $(wildcard $(CUDA_HOME)/include/cublas_v2.h $(if $(CUBLAS_HOME),$(CUBLAS_HOME)/include/cublas_v2.h)),1,),)
# -isystem: nccl.h declares ncclGroupStart() without (void), fatal under -Wstrict-prototypes -Werror
home_flags = $(if $(1),-isystem $(1)/include)
comma := ,
home_libs = $(if $(1),-L$(1)/lib -Wl$(comma)-rpath$(comma)$(1)/lib)
NVCC ?= $(CUDA_HOME)/bin/nvcc

GPU_NCCL_SRCS := common/world/nccl.c
GPU_IPC_SRCS := common/world/cuda_ipc.c
GPU_CUDA_SRCS := $(wildcard common/model/*_cuda.c)
GPU_CU_SRCS := $(wildcard common/model/*.cu)

ifeq ($(HAVE_CUDA),1)
CUDA_CPPFLAGS := $(call home_flags,$(CUDA_HOME))
CPPFLAGS += $(CUDA_CPPFLAGS)
CUDA_LIBDIR ?= $(if $(wildcard $(CUDA_HOME)/lib64/libcudart.so),$(CUDA_HOME)/lib64,$(GPU_CACHE)/lib)
CUDA_LIBS := -L$(CUDA_LIBDIR) -Wl,-rpath,$(CUDA_LIBDIR) -lcudart
endif
ifeq ($(HAVE_NCCL),1)
CPPFLAGS += -DMW_HAVE_NCCL=1 $(call home_flags,$(NCCL_HOME))
LDLIBS += $(call home_libs,$(NCCL_HOME)) -lnccl
endif
ifeq ($(HAVE_CUBLAS),1)
CPPFLAGS += -DMW_HAVE_CUBLAS=1 $(call home_flags,$(CUBLAS_HOME))
# nvcc's host code for the kernels needs the C++ runtime (static-init guards)
LDLIBS += $(call home_libs,$(CUBLAS_HOME)) -lcublas -lstdc++
endif
# The cuda-ipc world backend needs only the CUDA runtime.
ifeq ($(HAVE_CUDA),1)
CPPFLAGS += -DMW_HAVE_CUDA_IPC=1
LDLIBS += $(CUDA_LIBS)
endif

# --- sources ----------------------------------------------------------------
COMMON_SRCS := $(wildcard common/*.c common/*/*.c topics/*.c)
LIB_SRCS := $(filter-out $(GPU_NCCL_SRCS) $(GPU_IPC_SRCS) $(GPU_CUDA_SRCS),$(COMMON_SRCS)) \
            $(if $(HAVE_NCCL),$(GPU_NCCL_SRCS)) $(if $(HAVE_CUDA),$(GPU_IPC_SRCS)) \
            $(if $(HAVE_CUBLAS),$(GPU_CUDA_SRCS))
LIB_CU_SRCS := $(if $(HAVE_CUBLAS),$(GPU_CU_SRCS))
# Program code other than main() goes into libmwapp.a so tests can link it.
APP_SRCS := $(filter-out %/main.c,$(wildcard coordinator/*.c worker/*.c ops/mwctl/*.c))
PROGRAMS := $(foreach p,mw-worker:worker mw-coordinator:coordinator mwctl:ops/mwctl mw-agent:ops/agent,\
              $(if $(wildcard $(lastword $(subst :, ,$(p)))/main.c),$(p)))

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
LIB_OBJS := $(call obj,$(LIB_SRCS)) $(patsubst %.cu,$(BUILD)/obj/%.cu.o,$(LIB_CU_SRCS))
APP_OBJS := $(call obj,$(APP_SRCS))
LIBMW := $(BUILD)/libmw.a
LIBAPP := $(BUILD)/libmwapp.a
BINS := $(foreach p,$(PROGRAMS),$(BUILD)/bin/$(firstword $(subst :, ,$(p))))

UNIT_SRCS := $(wildcard tests/unit/test_*.c)
INTEG_SRCS := $(wildcard tests/integration/test_*.c)
BENCH_SRCS := $(wildcard tests/bench/bench_*.c)
PLUGIN_SRCS := $(wildcard tests/plugins/*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/unit/%,$(UNIT_SRCS))
INTEG_BINS := $(patsubst tests/integration/%.c,$(BUILD)/tests/integration/%,$(INTEG_SRCS))
BENCH_BINS := $(patsubst tests/bench/%.c,$(BUILD)/tests/bench/%,$(BENCH_SRCS))
PLUGINS := $(patsubst tests/plugins/%.c,$(BUILD)/plugins/%.so,$(PLUGIN_SRCS))
TEST_SUPPORT := $(call obj,$(wildcard tests/support/*.c))

FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRCS))
FUZZ_SECONDS ?= 60

.PHONY: all test unit integration fuzz-replay fuzz run bench deps docs format format-check lint clean help gpu-info
all: $(LIBMW) $(LIBAPP) $(BINS)

help:
	@sed -n '1,7p' Makefile | sed 's/^# \{0,1\}//'
	@echo "other targets: unit integration fuzz fuzz-replay bench deps format format-check lint clean gpu-info"

gpu-info:
	@echo "CUDA_HOME=$(CUDA_HOME) cuda=$(or $(HAVE_CUDA),no) nccl=$(or $(HAVE_NCCL),no) cublas=$(or $(HAVE_CUBLAS),no) cuda-ipc=$(or $(HAVE_CUDA),no)"
	@echo "NCCL_HOME=$(NCCL_HOME) CUBLAS_HOME=$(CUBLAS_HOME) CUDA_LIBDIR=$(CUDA_LIBDIR)"

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

# The dashboard's page, embedded in mwctl as dashboard_html[] (bytes, no NUL).
$(BUILD)/gen/dashboard_html.h: ops/mwctl/dashboard.html
	@mkdir -p $(@D)
	{ echo 'static const unsigned char dashboard_html[] = {'; \
	  od -An -v -tx1 $< | sed 's/ \([0-9a-f][0-9a-f]\)/0x\1,/g'; echo '};'; } >$@.tmp && mv $@.tmp $@
$(BUILD)/obj/ops/mwctl/dashboard.o: $(BUILD)/gen/dashboard_html.h

$(BUILD)/obj/%.cu.o: %.cu
	@mkdir -p $(@D)
	$(NVCC) -O2 -Icommon -I. -c $< -o $@

$(LIBMW): $(LIB_OBJS)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

$(LIBAPP): $(APP_OBJS)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^ $(if $(APP_OBJS),,&& true)

define program_rule
$(BUILD)/bin/$(1): $(call obj,$(2)/main.c) $(LIBAPP) $(LIBMW)
	@mkdir -p $$(@D)
	$$(CC) $$(CFLAGS) $$(LDFLAGS) $$^ $$(LDLIBS) -o $$@
endef
$(foreach p,$(PROGRAMS),$(eval $(call program_rule,$(firstword $(subst :, ,$(p))),$(lastword $(subst :, ,$(p))))))

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(TEST_SUPPORT) $(LIBAPP) $(LIBMW)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) $^ $(LDLIBS) -lcmocka -o $@

$(BUILD)/plugins/%.so: tests/plugins/%.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -fPIC -shared $< -o $@

# Fuzzers: clang + libFuzzer + ASan/UBSan, over the library sources they need.
# worker/hop.c: the data plane's header codec, pure, fuzzed with the frames.
# ops/mwctl/npy.c: mwctl score's .npy header parser, pure.
FUZZ_LIB_SRCS := $(filter-out $(GPU_NCCL_SRCS) $(GPU_IPC_SRCS) $(GPU_CUDA_SRCS),$(COMMON_SRCS)) worker/hop.c ops/mwctl/npy.c
$(BUILD)/fuzz/%: tests/fuzz/%.c $(FUZZ_LIB_SRCS)
	@mkdir -p $(@D)
	$(FUZZ_CC) -g -O1 -std=c11 -D_GNU_SOURCE -Icommon -I. $(PKG_CFLAGS) \
	    -fsanitize=fuzzer,address,undefined $^ $(PKG_LIBS) $(BLAS_LIBS) -lm -ldl -pthread -o $@

# --- tests ------------------------------------------------------------------
TEST_ENV = MW_BUILD=$(BUILD)

test: deps all $(UNIT_BINS) $(INTEG_BINS) $(PLUGINS) $(FUZZ_BINS)
	$(TEST_ENV) tests/run.sh all

unit: all $(UNIT_BINS) $(PLUGINS)
	$(TEST_ENV) tests/run.sh unit

integration: deps all $(INTEG_BINS) $(PLUGINS)
	$(TEST_ENV) tests/run.sh integration

fuzz-replay: $(FUZZ_BINS)
	$(TEST_ENV) tests/run.sh fuzz

fuzz: $(FUZZ_BINS)
	@for f in $(FUZZ_BINS); do \
	    n=$$(basename $$f); mkdir -p tests/fuzz/corpus/$$n $(BUILD)/fuzz/new-$$n; \
	    echo "fuzzing $$n for $(FUZZ_SECONDS)s"; \
	    $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $(BUILD)/fuzz/new-$$n tests/fuzz/corpus/$$n || exit 1; \
	done

bench: deps all $(BENCH_BINS) $(PLUGINS)
	$(TEST_ENV) tests/run.sh bench

run: deps all
	$(TEST_ENV) ops/run-local.sh $(RUN_ARGS)

# ops/deps.sh already ran when make read this file (DEPS_GOALS above).
deps:
	@:

# --- code hygiene -----------------------------------------------------------
FORMAT_SRCS := $(wildcard common/*.[ch] common/*/*.[ch] topics/*.[ch] coordinator/*.[ch] worker/*.[ch] \
                 ops/mwctl/*.[ch] ops/agent/*.[ch] tests/*/*.[ch])

format:
	clang-format -i $(FORMAT_SRCS)

format-check:
	clang-format --dry-run --Werror $(FORMAT_SRCS)

lint:
	cppcheck --quiet --error-exitcode=1 --std=c11 --enable=warning,portability,performance \
	    --inline-suppr --suppress=missingIncludeSystem -D__GNUC__ -Icommon -I. \
	    common topics coordinator worker ops/mwctl ops/agent

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)

# The README's configuration table comes from the key table in common/config.c.
docs: $(BUILD)/bin/mwctl
	@$(BUILD)/bin/mwctl config --markdown >$(BUILD)/config-table.md
	@awk -v table=$(BUILD)/config-table.md \
	    '/<!-- config-table:begin -->/ {print; while ((getline l < table) > 0) print l; skip=1; next} \
	     /<!-- config-table:end -->/ {skip=0} !skip {print}' README.md >README.md.new
	@mv README.md.new README.md
