# elastic: build, test, demo. Dependencies are found with pkg-config.
#   make            build the programs into bin/
#   make test       install missing Debian packages, build, run the whole suite
#   make demo       install, build, train a small model on synthetic data
#   make format     clang-format every source in place
#   make lint       cppcheck over every source
#   make deps       install the Debian packages (root or sudo)
# Options: SAN=address,undefined (sanitizers), OPT=-O0 -g, ARCH= (default -march=native)

CC      ?= gcc
PKGS    := hdf5 openblas ompi-c
OPT     ?= -O3
ARCH    ?= -march=native
WARN    := -Wall -Wextra -Wshadow -Wno-unused-parameter -Wno-format-truncation
CFLAGS  += -std=gnu11 $(OPT) $(ARCH) $(WARN) -fopenmp -g -MMD -MP
CPPFLAGS+= -I. -Ikernels -Icomm -Idatasets -Isrc
LDLIBS  += -lm -lpthread
ifneq ($(SAN),)
CFLAGS  += -fsanitize=$(SAN) -fno-omit-frame-pointer
LDFLAGS += -fsanitize=$(SAN)
endif

DEBS := libopenmpi-dev openmpi-bin libhdf5-dev libopenblas-openmp-dev libcmocka-dev pkg-config
# OpenBLAS's OpenMP build shares one thread pool with our OpenMP loops; the
# pthread build's spinning threads fight them for the cores (2.3x slower steps
# on 2 cores). Debian installs it beside the default, so point at it and rpath it.
MULTIARCH := $(shell $(CC) -print-multiarch 2>/dev/null)
BLAS_OMP  := /usr/lib/$(MULTIARCH)/openblas-openmp
ifneq ($(wildcard $(BLAS_OMP)/pkgconfig/openblas.pc),)
export PKG_CONFIG_PATH := $(BLAS_OMP)/pkgconfig$(if $(PKG_CONFIG_PATH),:$(PKG_CONFIG_PATH))
LDFLAGS  += -Wl,-rpath,$(BLAS_OMP)
endif
# DEP=PREFIX: the dependencies unpacked from .debs under PREFIX (an offline
# node without them installed: jobs/offline-deps.sh), found by path, not by
# pkg-config. Otherwise pkg-config finds them; the programs need hdf5,
# openblas and ompi-c, the tests cmocka too.
ifneq ($(DEP),)
DEP_LIB  := $(DEP)/usr/lib/$(MULTIARCH)
DEP_LIBS := $(DEP_LIB) $(DEP_LIB)/hdf5/serial $(DEP_LIB)/openblas-openmp $(DEP_LIB)/openmpi/lib
CPPFLAGS += -I$(DEP)/usr/include -I$(DEP)/usr/include/hdf5/serial \
            -I$(DEP)/usr/include/$(MULTIARCH)/openblas-openmp -I$(DEP_LIB)/openmpi/include
LDFLAGS  += $(foreach d,$(DEP_LIBS),-L$(d) -Wl,-rpath,$(d))
LDLIBS   += -lhdf5 -lopenblas -lmpi
CMOCKA   := -lcmocka
HAVE_PKGS := $(if $(wildcard $(DEP)/usr/include/hdf5/serial/hdf5.h),yes)
HAVE_CMOCKA := $(if $(wildcard $(DEP)/usr/include/cmocka.h),yes)
else
HAVE_PKGS := $(shell pkg-config --exists $(PKGS) 2>/dev/null && echo yes)
HAVE_CMOCKA := $(shell pkg-config --exists cmocka 2>/dev/null && echo yes)
ifeq ($(HAVE_PKGS),yes)
CPPFLAGS += $(shell pkg-config --cflags $(PKGS))
LDLIBS   += $(shell pkg-config --libs $(PKGS))
endif
ifeq ($(HAVE_CMOCKA),yes)
CMOCKA   := $(shell pkg-config --libs cmocka)
endif
endif

# CUDA: the backend is a shared library, $(BINDIR)/libelastic_cuda.so, built
# whenever nvcc is found (NVCC=, or /usr/local/cuda), also on a machine
# without a GPU; the programs load it only for --device cuda (a CPU run never
# maps the CUDA libraries). CUDA=no leaves it out; CUDA_ARCH: the GPU
# generation (sm_90: Hopper).
NVCC      ?= $(firstword $(shell command -v nvcc 2>/dev/null) $(wildcard /usr/local/cuda/bin/nvcc))
CUDA      ?= $(if $(NVCC),yes,no)
CUDA_ARCH ?= sm_90
CUDA_SRC  := $(wildcard kernels/cuda/*.cu)
ifeq ($(CUDA),yes)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA_LIB  := $(firstword $(wildcard $(CUDA_HOME)/lib64 $(CUDA_HOME)/lib))
NVFLAGS   ?= -O3 -std=c++20 -arch=$(CUDA_ARCH) -lineinfo -Xcompiler -fPIC
CUDA_SO    = $(BINDIR)/libelastic_cuda.so
# NCCL (--comm nccl): NCCL_HOME=, else CUDA's own, else the nvidia/nccl folder
# of the Python environment (PyTorch's, on a GPU node without a system NCCL).
# Without nccl.h the backend builds without it (--comm nccl then says so).
NCCL_HOME ?= $(or $(if $(wildcard $(CUDA_HOME)/include/nccl.h),$(CUDA_HOME)),$(shell python3 -c \
  "import nvidia.nccl, os; print(list(nvidia.nccl.__path__)[0])" 2>/dev/null))
ifneq ($(wildcard $(NCCL_HOME)/include/nccl.h),)
NCCL_LIB  := $(firstword $(wildcard $(NCCL_HOME)/lib64/libnccl.so.2 $(NCCL_HOME)/lib/libnccl.so.2))
NCCL_FLAGS := -I$(NCCL_HOME)/include
NCCL_LINK  := -L$(dir $(NCCL_LIB)) -Xlinker -rpath,$(dir $(NCCL_LIB)) -l:libnccl.so.2
else
NCCL_FLAGS := -DELASTIC_NO_NCCL
endif
endif
LDLIBS    += -ldl

# sanitizer builds live apart, so they never mix objects with the normal build
# B= and BINDIR= put a whole build elsewhere (a second build beside this one)
B      ?= build$(if $(SAN),-san)
BINDIR ?= $(if $(SAN),$(B)/bin,bin)
KERNEL_SRC := $(wildcard kernels/cpu/*.c)
COMM_SRC   := $(wildcard comm/*.c)
DATA_SRC   := $(wildcard datasets/*.c)
MAINS      := $(wildcard src/*_main.c)
SRC_SRC    := $(filter-out $(MAINS),$(wildcard src/*.c src/models/*.c))
PROGS      := $(patsubst src/%_main.c,$(BINDIR)/elastic_%,$(MAINS))

obj = $(patsubst %.c,$(B)/%.o,$(1))
KERNEL_OBJ     := $(call obj,$(KERNEL_SRC))
CUDA_OBJ       := $(patsubst %.cu,$(B)/%.o,$(CUDA_SRC))
KERNEL_F64_OBJ := $(patsubst %.c,$(B)/f64/%.o,$(KERNEL_SRC))
LIB_OBJ        := $(call obj,$(SRC_SRC) $(DATA_SRC) $(COMM_SRC)) $(KERNEL_OBJ)

TEST_SRC     := $(wildcard tests/test_*.c)
TEST_F64_SRC := $(wildcard tests/test_kernels*.c)
TESTS        := $(patsubst tests/%.c,$(B)/tests/%,$(TEST_SRC))

.PHONY: all test demo deps format lint clean check-deps check-test-deps
# objects reached only through pattern rules (the programs' mains) are not
# intermediates to delete: a second make must not rebuild them
.SECONDARY:
all: check-deps $(PROGS) $(CUDA_SO)

check-deps:
ifneq ($(HAVE_PKGS),yes)
	@echo "missing build dependencies ($(if $(DEP),under DEP=$(DEP),pkg-config: $(PKGS))); run 'make deps' (Debian: $(DEBS)), or on an offline node unpack them with jobs/offline-deps.sh and build with DEP=PREFIX" >&2; exit 1
endif

check-test-deps: check-deps
ifneq ($(HAVE_CMOCKA),yes)
	@echo "the tests need cmocka ($(if $(DEP),cmocka.h under DEP=$(DEP),pkg-config: cmocka)); run 'make deps' (Debian: libcmocka-dev)" >&2; exit 1
endif

# Installs what is missing, where it can: never on a machine whose
# dependencies come from DEP=, nor without apt-get (an offline node says what
# is missing instead of failing on the network).
deps:
	@if [ -n "$(DEP)" ]; then \
	  echo "deps: DEP=$(DEP): nothing installed (the dependencies are unpacked there)"; \
	elif pkg-config --exists $(PKGS) cmocka 2>/dev/null && [ -e $(BLAS_OMP)/pkgconfig/openblas.pc ] && command -v mpirun >/dev/null && command -v h5dump >/dev/null; then \
	  echo "deps: all Debian packages present"; \
	elif ! command -v apt-get >/dev/null; then \
	  echo "deps: missing build dependencies and no apt-get here: install $(DEBS) hdf5-tools, or unpack them with jobs/offline-deps.sh and build with DEP=PREFIX" >&2; exit 1; \
	else \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  echo "deps: installing $(DEBS) hdf5-tools"; \
	  $$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends $(DEBS) hdf5-tools make gcc; \
	fi
	@# plots (jobs/plot.sh, make demo, tests/cli/plot.sh)
	@[ -n "$(DEP)" ] || ! command -v apt-get >/dev/null || command -v gnuplot >/dev/null || { SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends gnuplot-nox >/dev/null 2>&1 \
	  || echo "deps: gnuplot-nox not installed: no plots (jobs/plot.sh), their checks skipped"; }
	@# optional, for the tests only: a real one-node Slurm (tests/cli/slurm.sh)
	@[ -n "$(DEP)" ] || ! command -v apt-get >/dev/null || command -v slurmctld >/dev/null || { SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends slurm-wlm munge >/dev/null 2>&1 \
	  || echo "deps: slurm-wlm and munge (optional) not installed: the Slurm checks will be skipped"; }
	@# optional, for the tests only: the BLAS core correction checks run on an
	@# emulated CPU (tests/cli/blas.sh); without it they say skipped
	@[ -n "$(DEP)" ] || ! command -v apt-get >/dev/null || command -v qemu-x86_64 >/dev/null || { SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends qemu-user >/dev/null 2>&1 \
	  || echo "deps: qemu-user (optional) not installed: the BLAS correction checks will be skipped"; }

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(B)/%.o: %.cu kernels/cuda/cuda.h kernels/cuda/common.cuh kernels/cuda/ops.h
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) $(NCCL_FLAGS) -I. -Ikernels -Ikernels/cuda -c $< -o $@

$(BINDIR)/libelastic_cuda.so: $(CUDA_OBJ)
	@mkdir -p $(BINDIR)
	$(NVCC) -shared -arch=$(CUDA_ARCH) $^ -o $@ -L$(CUDA_LIB) -Xlinker -rpath,$(CUDA_LIB) -lcublas -lcudart $(NCCL_LINK)

# The same backend sources built as C++ for the CUDA emulator (tests/cuda_emu):
# the CUDA tests run through it with no GPU and no nvcc (make test does so).
EMU_OBJ := $(patsubst kernels/cuda/%.cu,$(B)/emu/%.o,$(CUDA_SRC))
$(B)/emu/%.cpp: kernels/cuda/%.cu tests/cuda_emu/emu.sh
	@mkdir -p $(dir $@)
	tests/cuda_emu/emu.sh $< $@
$(B)/emu/%.o: $(B)/emu/%.cpp kernels/cuda/cuda.h kernels/cuda/common.cuh kernels/cuda/ops.h $(wildcard tests/cuda_emu/*.h tests/cuda_emu/cub/*.cuh)
	$(CXX) -std=c++20 -O1 -g -fPIC -w -U_FORTIFY_SOURCE -Itests/cuda_emu -I. -Ikernels -Ikernels/cuda \
	  $(filter -I%,$(CPPFLAGS)) -c $< -o $@
$(B)/emu/libelastic_cuda_emu.so: $(EMU_OBJ)
	$(CXX) -shared $^ -o $@

# the device layer knows where this build puts the CUDA backend
$(B)/kernels/cpu/device.o: CPPFLAGS += -DELASTIC_CUDA_LIB='"$(abspath $(BINDIR))/libelastic_cuda.so"'

$(B)/f64/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -DKERNELS_F64 -c $< -o $@

$(BINDIR)/elastic_%: $(B)/src/%_main.o $(LIB_OBJ)
	@mkdir -p $(BINDIR)
	$(CC) $(CFLAGS) $(LDFLAGS) $^ -o $@ $(LDLIBS)

# Kernel tests link the double-precision kernels only; the rest link the trainer.
$(B)/tests/test_kernels%: $(B)/f64/tests/test_kernels%.o $(KERNEL_F64_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) $^ -o $@ $(LDLIBS) $(CMOCKA)

$(B)/tests/test_%: $(B)/tests/test_%.o $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) $^ -o $@ $(LDLIBS) $(CMOCKA)

test: deps
	$(MAKE) check-test-deps all $(TESTS) $(B)/emu/libelastic_cuda_emu.so
	@BIN=$(BINDIR) TESTBIN=$(B)/tests CUDA_EMU=$(B)/emu/libelastic_cuda_emu.so bash tests/run.sh $(TESTS)

demo: deps
	$(MAKE) all
	@bash jobs/demo.sh

FORMAT_SRC := $(shell find src kernels comm datasets tests -name '*.[ch]' -o -name '*.cu' 2>/dev/null)
format:
	clang-format -i $(FORMAT_SRC)

lint:
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability \
	  --inline-suppr --std=c11 -I kernels -I comm -I datasets -I src \
	  --suppress=missingIncludeSystem $(filter %.c,$(FORMAT_SRC))

clean:
	rm -rf build build-san bin

-include $(shell find $(B) -name '*.d' 2>/dev/null)
