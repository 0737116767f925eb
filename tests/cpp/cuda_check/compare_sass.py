#!/usr/bin/env python3
"""Compares the SASS of two builds of the CUDA kernels, kernel by kernel: per architecture, each
function's instructions (addresses, encodings and line information dropped). Exit status 1 if
any kernel differs or is in one build only.

  compare_sass.py BEFORE.fatbin AFTER.fatbin   (cuobjdump on PATH or in $CUOBJDUMP)
  compare_sass.py --rename 'REGEX=REPL' ... BEFORE AFTER
                  AFTER's mangled names rewritten first (re.sub), e.g. a template parameter added
                  with a default: --rename '(fwd_staged_kernel\w*?Li\d)ELb0E=\1E' (session 24's ONE_ROW)

Each side may be several files (objects or fatbins), comma-separated: the kernels compile in
parts (cuda/parts.cu.in), an object each, e.g. AFTER = the build folder's part_*.cu.o and
launch.cu.o. A kernel found in two files of one side counts as differing.

Building the two fatbins (sm_80, sm_90), e.g. before = cuda/layer_norm.cu at ecbef91:
  nvcc -std=c++20 -O3 -DNDEBUG --expt-relaxed-constexpr -lineinfo -Xptxas=-v \
       -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 -fatbin SRC -o OUT
(ptxas_counts.py --diff compares the two -Xptxas=-v logs: registers, spills, stack, shared memory).
"""
import os
import re
import subprocess
import sys

FUNC = re.compile(r"^\s*Function : (\S+)")
ARCH = re.compile(r"^\s*code for (sm_\d+)")
INSN = re.compile(r"^\s*/\*[0-9a-f]{4,}\*/\s*(.*?)\s*;?\s*/\* 0x[0-9a-f]+ \*/\s*$")


def kernels(files):
    out = {}
    for f in files.split(","):
        for name, insns in kernels_of(f).items():
            # the same kernel in two parts: compiled twice, which the parts are built to avoid
            out[name] = insns if name not in out else ["<in two files>"]
    return out


def kernels_of(fatbin):
    tool = os.environ.get("CUOBJDUMP", "cuobjdump")
    text = subprocess.run([tool, "-sass", fatbin], capture_output=True, text=True, check=True).stdout
    out, arch, name = {}, None, None
    for line in text.splitlines():
        m = ARCH.match(line)
        if m:
            arch = m.group(1)
            continue
        m = FUNC.match(line)
        if m:
            name = (arch, m.group(1))
            out[name] = []
            continue
        m = INSN.match(line)
        if m and name:
            out[name].append(m.group(1))
    return out


def main():
    args, renames = sys.argv[1:], []
    while args and args[0] == "--rename":
        pattern, _, repl = args[1].partition("=")
        renames.append((re.compile(pattern), repl))
        args = args[2:]
    a, b = kernels(args[0]), kernels(args[1])
    for pattern, repl in renames:
        b = {(arch, pattern.sub(repl, name)): insns for (arch, name), insns in b.items()}
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    differ = [k for k in sorted(set(a) & set(b)) if a[k] != b[k]]
    for k in only_a:
        print("before only:", *k)
    for k in only_b:
        print("after only:", *k)
    for k in differ:
        print("differs:", *k)
    same = len(set(a) & set(b)) - len(differ)
    insns = sum(len(a[k]) for k in set(a) & set(b))
    archs = sorted({k[0] for k in a})
    print(f"{len(a)} kernels before, {len(b)} after ({', '.join(archs)}); {same} identical "
          f"({insns} instructions), {len(differ)} differ, {len(only_a) + len(only_b)} in one build only")
    sys.exit(1 if differ or only_a or only_b else 0)


if __name__ == "__main__":
    main()
