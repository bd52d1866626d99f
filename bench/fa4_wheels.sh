#!/usr/bin/env bash
# Carry flash-attn-4, quack-kernels and their CuTe DSL (the optional `fa4` and `quack` extras) to the offline GPU
# machine (Python 3.12, CUDA 13).
# The DSL's cu13 wheel is 92 MB, over the 64 MiB one device call carries, so it travels as two xz parts in two calls
# on one warm machine:
#   bench/fa4_wheels.sh pack       # here, with PyPI: .carry/fa4a (part 1) and .carry/fa4b (part 2 + the other wheels)
#   bench/fa4_wheels.sh stash      # there, first call, carry .carry/fa4a: part 1 -> /root/fa4stash
#   bench/fa4_wheels.sh install    # there, next call on the same (warm) machine, carry .carry/fa4b
set -euo pipefail
cd "$(dirname "$0")/.."
FA4=flash-attn-4==4.0.0b36
DSL=4.8.1
case "${1:-}" in
  pack)
    tmp=$(mktemp -d)
    pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 -d "$tmp" \
      "$FA4" "nvidia-cutlass-dsl==$DSL" "nvidia-cutlass-dsl-libs-base==$DSL" "nvidia-cutlass-dsl-libs-core==$DSL" \
      "nvidia-cutlass-dsl-libs-cu13==$DSL" "apache-tvm-ffi<0.2,>=0.1.11" torch-c-dlpack-ext "quack-kernels==0.6.5" einops
    mkdir -p "$tmp/cu13" .carry/fa4a .carry/fa4b
    rm -f .carry/fa4a/* .carry/fa4b/*
    (cd "$tmp/cu13" && unzip -q "$tmp"/nvidia_cutlass_dsl_libs_cu13-*.whl && tar cf - . | xz -9e -T0 > "$tmp/cu13.tar.xz")
    split -b 36m "$tmp/cu13.tar.xz" "$tmp/cu13.part-"
    mv "$tmp/cu13.part-aa" .carry/fa4a/
    mv "$tmp/cu13.part-ab" .carry/fa4b/
    rm "$tmp"/nvidia_cutlass_dsl_libs_cu13-*.whl
    mv "$tmp"/*.whl .carry/fa4b/
    rm -rf "$tmp"
    du -sh .carry/fa4a .carry/fa4b ;;
  stash)
    mkdir -p /root/fa4stash && cp .carry/fa4a/cu13.part-aa /root/fa4stash/ ;;
  install)
    [ -f /root/fa4stash/cu13.part-aa ] || { echo "fa4_wheels.sh: /root/fa4stash/cu13.part-aa missing:" \
      "run 'stash' first on this machine (the machine was given back between the calls?)" >&2; exit 2; }
    site=$(python3 -c "import site; print(site.getsitepackages()[0])")
    cat /root/fa4stash/cu13.part-aa .carry/fa4b/cu13.part-ab | xz -d -T0 | tar x -C "$site"
    python3 -m pip install -q --no-deps .carry/fa4b/*.whl
    python3 -c "import flash_attn.cute.interface, quack.epilogue.library; print('flash-attn-4 and quack ready')" ;;
  *)
    echo "usage: bench/fa4_wheels.sh pack|stash|install" >&2; exit 2 ;;
esac
