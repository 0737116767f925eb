#!/bin/bash
# The peers' wheels for a device run (Liger-Kernel, Quack and what Quack imports), downloaded here
# for the device's Python 3.12 (../shared/peers/device-peers.md): .whl/ (carry it with STAGES=peers)
# and the 92 MB cu13 wheel of CUTLASS's DSL split in two, because one call carries at most 64 MiB:
# .big/a/*_aa (carry it with STAGES=stash, an earlier call on the same machine) and .big/b/*_ab
# (carry it with STAGES=peers). bench/device_run.sh joins the halves again. Both folders are
# git-ignored and lost with the machine: run this before the first device call of a session.
#   bash bench/fetch_peers.sh            # into the repository root
set -euo pipefail
cd "$(dirname "$0")/.."

P="--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
   --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64"
CU13=nvidia_cutlass_dsl_libs_cu13-4.8.1-cp312-cp312-manylinux_2_28_x86_64.whl

rm -rf .whl .big
# shellcheck disable=SC2086  # P is a list of options
python3 -m pip download -q $P -d .whl liger-kernel==0.8.5 quack-kernels==0.6.5 nvidia-cutlass-dsl==4.8.1 \
  nvidia-cutlass-dsl-libs-core==4.8.1 nvidia-cutlass-dsl-libs-base==4.8.1 apache-tvm-ffi torch-c-dlpack-ext
# shellcheck disable=SC2086
python3 -m pip download -q $P -d .big nvidia-cutlass-dsl-libs-cu13==4.8.1
[ -f ".big/$CU13" ] || { echo "fetch_peers: .big/$CU13 was not downloaded" >&2; exit 1; }
mkdir -p .big/a .big/b
split -b 46M ".big/$CU13" ".big/$CU13"_
mv ".big/$CU13"_aa .big/a/ && mv ".big/$CU13"_ab .big/b/
[ ! -e ".big/$CU13"_ac ] || { echo "fetch_peers: $CU13 needs more than two parts" >&2; exit 1; }
# the halves must join to the wheel that was downloaded
cmp <(cat .big/a/*_aa .big/b/*_ab) ".big/$CU13" && rm ".big/$CU13"
du -sh .whl .big/a .big/b
