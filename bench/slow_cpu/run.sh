#!/usr/bin/env bash
# Run a command as on the 2-core AVX2-only machine kind: no AVX512 kernels and no native bf16
# (oneDNN, ATen and MKL held to AVX2), and each core about half as fast. Calibrated on the
# AVX512-BF16 machine: a 2048^3 fp32 matmul then runs at 93 GFLOP/s (188 unheld), as the AVX2-only
# machine's ~90, and pure Python and torch's import take 2x as long.
#
#   sudo bench/slow_cpu/run.sh python -m pytest -q
#
# --one-core models that machine otherwise: its two threads as the two hardware threads of one
# core (two threads of it reach ~90 GFLOP/s, one AVX2 core's fused multiply-add peak; one core
# here, held to AVX2, measured 102). The command runs on core 0 alone at full speed, no loops:
# Python as fast as here, two busy processes taking turns.
#
#   bench/slow_cpu/run.sh --one-core python -m pytest -q
#
# Needs root, cgroup v1's cpu controller at /sys/fs/cgroup/cpu, gcc and taskset (--one-core:
# taskset alone). A simulation, not the machine: figures from it are named as such.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2
if [[ "${1:-}" == "--one-core" ]]; then
  shift
  exec taskset -c 0 "$@"
fi
cgroup=/sys/fs/cgroup/cpu/cnnsweep-slow-cpu
binary="$(mktemp -d)/busy"
gcc -O2 -o "$binary" "$here/busy.c"
mkdir -p "$cgroup"
echo 4096 > "$cgroup/cpu.shares"  # outweighs the command's 1024: the loops get their duty cycle
pids=()
for core in 0 1; do
  (echo "$BASHPID" > "$cgroup/cgroup.procs" && exec taskset -c "$core" "$binary" 525 475) &
  pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$(dirname "$binary")"' EXIT
sleep 0.3
"$@"
