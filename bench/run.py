"""Runs the fastln benchmark suite: python bench/run.py [--quick] [--device cpu|cuda] [--out DIR]
[--shapes MxN,...] [--dtypes NAME,...] (see --help)."""
import sys

from fastln.benchmark import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
