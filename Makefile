# zimage - Makefile.  `make` prints help.
#
# Flavours (each in its own build folder):
#   build/cpu    release, CPU backend only          -> ./zimage
#   build/cuda   release, CPU + CUDA backends        -> ./zimage
#   build/debug  -O1 -g, AddressSanitizer + UBSan    -> build/debug/zimage
# Sources are found by wildcard: a new src/**/*.c or tests/test_*.c needs no
# Makefile edit.

.DEFAULT_GOAL := help
SHELL := /bin/bash

CC        ?= cc
NVCC      ?= nvcc
PKGS      := openblas jansson libpng zlib libutf8proc libcurl libmicrohttpd
HAVE_NVCC := $(shell command -v $(NVCC) >/dev/null 2>&1 && echo 1)
# GPU architectures for `make cuda` (override: make cuda CUDA_ARCH="90a").
# Default: the local GPU if nvidia-smi sees one, else A100/30xx/40xx/H100.
CUDA_ARCH ?= $(or $(shell nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d . | sed 's/^90$$/90a/'),80 86 89 90a)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(shell command -v $(NVCC) 2>/dev/null))

# JPEG / WebP output of the server: used when the libraries are installed (make deps does)
OPT_PKGS   := $(foreach p,libjpeg libwebp,$(shell pkg-config --exists $(p) 2>/dev/null && echo $(p)))
OPT_DEFS   := $(if $(filter libjpeg,$(OPT_PKGS)),-DZIMAGE_HAVE_JPEG) $(if $(filter libwebp,$(OPT_PKGS)),-DZIMAGE_HAVE_WEBP)
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) $(OPT_PKGS) 2>/dev/null) $(OPT_DEFS)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) $(OPT_PKGS) 2>/dev/null)
CMOCKA_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null)

WARN   := -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow -Wstrict-prototypes -Wvla
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE -g $(WARN) -fopenmp -Iinclude -Isrc $(PKG_CFLAGS)
LDLIBS_BASE := $(PKG_LIBS) -fopenmp -lm -lpthread

LIB_SRC  := $(sort $(filter-out src/cli/%,$(wildcard src/*.c src/*/*.c src/*/*/*.c)))
CLI_SRC  := $(sort $(wildcard src/cli/*.c))
CU_SRC   := $(sort $(wildcard src/ops/cuda/*.cu))
TEST_SRC := $(sort $(wildcard tests/test_*.c))
TEST_LIB := $(sort $(wildcard tests/util/*.c))
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))

# ---- flavour selection (recursive make sets FLAVOUR) ----------------------
FLAVOUR ?= cpu
ifeq ($(FLAVOUR),debug)
  OPT := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
  LDOPT := -fsanitize=address,undefined
else
  OPT := -O3 -march=x86-64-v2 -mtune=native
  LDOPT :=
endif
ifeq ($(FLAVOUR),cuda)
  FLAV_CFLAGS := -DZIMAGE_HAVE_CUDA -I$(CUDA_HOME)/include
  # nvcc's host stubs need the C++ runtime (static-init guards), not C++ code of ours
  FLAV_LIBS := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublasLt -lcublas -lcudnn -lcudart -lstdc++
  FLAV_CU := $(CU_SRC)
else
  FLAV_CFLAGS :=
  FLAV_LIBS :=
  FLAV_CU :=
endif

B       := build/$(FLAVOUR)
CFLAGS  := $(BASE_CFLAGS) $(OPT) $(FLAV_CFLAGS) $(EXTRA_CFLAGS)
LDLIBS  := $(LDLIBS_BASE) $(FLAV_LIBS) $(LDOPT)
NVFLAGS := -O3 -std=c++17 -Xcompiler -Wall,-Wno-unused-parameter -Werror all-warnings -Isrc -Iinclude \
           --expt-relaxed-constexpr $(foreach a,$(CUDA_ARCH),-gencode arch=compute_$(a),code=sm_$(a))

LIB_OBJ  := $(LIB_SRC:%.c=$(B)/%.o) $(FLAV_CU:%.cu=$(B)/%.cu.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(B)/%.o)
TEST_BIN := $(TEST_SRC:tests/%.c=$(B)/tests/%)
TLIB_OBJ := $(TEST_LIB:%.c=$(B)/%.o)
LIBA     := $(B)/libzimage.a

.PHONY: help build cpu cuda debug test test-quick test-debug fuzz deps fixtures bench clean \
        _lib _tests _bin cuda-check cuda-compile

help:
	@echo "zimage - Z-Image-Turbo text-to-image in C/CUDA"
	@echo ""
	@echo "  make deps        apt-get install the Debian packages the build needs"
	@echo "  make build       build ./zimage (with CUDA if nvcc is found, else CPU only)"
	@echo "  make cpu         build ./zimage, CPU backend only"
	@echo "  make cuda        build ./zimage with the CUDA backend (CUDA_ARCH=\"$(CUDA_ARCH)\")"
	@echo "  make debug       build build/debug/zimage with AddressSanitizer + UBSan"
	@echo "  make test        all CPU tests, then again under ASan/UBSan, then fuzz smoke runs"
	@echo "  make test-quick  the CPU tests once (release build)"
	@echo "  make fuzz        libFuzzer targets, FUZZ_SECONDS=$(FUZZ_SECONDS) each"
	@echo "  make cuda-check  (GPU machine) CUDA ops and pipelines against the CPU backend"
	@echo "  make fixtures    regenerate tests/fixtures with torch/transformers/diffusers"
	@echo "  make clean"

deps:
	@missing=""; for p in build-essential pkg-config clang libclang-rt-14-dev libopenblas-dev libjansson-dev \
	    libpng-dev libutf8proc-dev libcmocka-dev libcurl4-openssl-dev libmicrohttpd-dev zlib1g-dev \
	    libjpeg62-turbo-dev libwebp-dev python3; do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  SUDO=$$( [ $$(id -u) -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	else echo "all build dependencies present"; fi

build:
ifeq ($(HAVE_NVCC),1)
	@$(MAKE) --no-print-directory cuda
else
	@$(MAKE) --no-print-directory cpu
endif

cpu:
	@$(MAKE) --no-print-directory FLAVOUR=cpu _bin
	@cp build/cpu/zimage ./zimage && echo "built ./zimage (CPU)"

cuda:
	@$(MAKE) --no-print-directory FLAVOUR=cuda _bin
	@cp build/cuda/zimage ./zimage && echo "built ./zimage (CUDA: $(CUDA_ARCH))"

# Compile every .cu file (CI has nvcc but no GPU).
cuda-compile:
	@$(MAKE) --no-print-directory FLAVOUR=cuda _bin _tests

debug:
	@$(MAKE) --no-print-directory FLAVOUR=debug _bin

_lib: $(LIBA)
_bin: $(B)/zimage
_tests: $(TEST_BIN)

$(LIBA): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/zimage: $(CLI_OBJ) $(LIBA)
	$(CC) $(CFLAGS) -o $@ $(CLI_OBJ) $(LIBA) $(LDLIBS)

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(B)/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -MMD -MP -c $< -o $@

$(B)/tests/%: tests/%.c $(TLIB_OBJ) $(LIBA)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -o $@ $< $(TLIB_OBJ) $(LIBA) $(LDLIBS) $(CMOCKA_LIBS)

# ---- tests -----------------------------------------------------------------
# Each tests/test_*.c is one cmocka program, run from the repo root.
# ZIMAGE_TEST_QUICK=1 lets slow tests use fewer cases.
TEST_ENV := ZIMAGE_FIXTURES=tests/fixtures OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=1
run-tests:
	@$(MAKE) --no-print-directory FLAVOUR=$(FLAVOUR) _tests _bin
	@fail=0; pass=0; for t in $(TEST_BIN); do \
	  echo "== $$t"; \
	  if $(TEST_ENV) ZIMAGE_BIN=$(B)/zimage $(RUNTEST_ENV) $$t; then pass=$$((pass+1)); else fail=$$((fail+1)); echo "FAILED: $$t"; fi; \
	done; echo "$(FLAVOUR) tests: $$pass passed, $$fail failed"; [ $$fail -eq 0 ]

test-quick:
	@$(MAKE) --no-print-directory FLAVOUR=cpu RUNTEST_ENV="ZIMAGE_TEST_QUICK=1" run-tests

test-debug:
	@$(MAKE) --no-print-directory FLAVOUR=debug \
	  RUNTEST_ENV="ZIMAGE_TEST_QUICK=1 ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1" run-tests

test:
	@$(MAKE) --no-print-directory FLAVOUR=cpu run-tests
	@$(MAKE) --no-print-directory test-debug
	@$(MAKE) --no-print-directory fuzz

# ---- fuzzing (clang libFuzzer) --------------------------------------------------
FUZZ_SECONDS ?= 20
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Isrc $(PKG_CFLAGS)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)
build/fuzz/%: tests/fuzz/%.c $(LIB_SRC)
	@mkdir -p build/fuzz
	clang $(FUZZ_CFLAGS) -fopenmp=libgomp -o $@ $< $(LIB_SRC) $(LDLIBS_BASE)
fuzz: $(FUZZ_BIN)
	@for f in $(FUZZ_BIN); do \
	  name=$$(basename $$f); corpus=tests/fuzz/corpus/$${name#fuzz_}; mkdir -p build/fuzz/work-$$name; \
	  echo "== $$f ($(FUZZ_SECONDS) s)"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -print_final_stats=1 build/fuzz/work-$$name \
	      $$( [ -d $$corpus ] && echo $$corpus ) 2>&1 | tail -n 12 || exit 1; \
	done

# ---- GPU correctness (run on the device machine) --------------------------------
cuda-check:
	@$(MAKE) --no-print-directory FLAVOUR=cuda _tests _bin
	@for t in build/cuda/tests/test_cuda_*; do echo "== $$t"; $(TEST_ENV) ZIMAGE_BIN=build/cuda/zimage $$t || exit 1; done

fixtures:
	python3 tools/make_fixtures.py --out tests/fixtures

clean:
	rm -rf build zimage

-include $(shell find build -name '*.d' 2>/dev/null)
