#!/usr/bin/env bash
# emu.sh IN.cu OUT.cpp: a kernels/cuda source as C++ for the CUDA emulator
# (cuda_runtime.h beside this): each launch k<<<g, b, s, st>>>(args) becomes
# emu_launch(k, "k", g, b, s, st, args), and dynamic shared memory a pointer to the
# emulator's buffer, NULL nullptr. Launches must sit on one line (clang-format keeps them so).
set -euo pipefail
sed -e 's/\b\([A-Za-z_][A-Za-z_0-9]*\)<<<\(.*\)>>>(/emu_launch(\1, "\1", \2, /' \
    -e 's/\bNULL\b/nullptr/g' \
    -e 's/extern __shared__ \(__align__([0-9]*) \)\?float \([A-Za-z_0-9]*\)\[\];/float* \2 = (float*)emu_dynamic_shared;/' \
    "$1" > "$2"
if grep -n '<<<\|extern __shared__' "$2"; then
    echo "emu.sh: $1 has a launch or shared declaration the emulator cannot rewrite" >&2
    exit 1
fi
