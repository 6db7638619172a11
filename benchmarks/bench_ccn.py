#!/usr/bin/env python
"""Full-mode CCN scoring benchmark (issue 6); the same as ``vireid bench``.

    python benchmarks/bench_ccn.py [--json OUT] [--n 512] [--paper-pairs 200] ...
"""
import sys

from vireid.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
