"""Run the benchmarks of benchmarks/README.md: ``python benchmarks/run_benchmarks.py [--quick] [--json PATH] ...``.

A thin wrapper around :func:`ntkdr.cli.bench.main` (the same options as ``ntkdr bench``);
see benchmarks/README.md.
"""

import sys

from ntkdr.cli.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
