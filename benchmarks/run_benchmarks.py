"""Run the SPEC section 6 benchmarks: ``python benchmarks/run_benchmarks.py [--quick] [--json PATH] ...``.

A thin wrapper around :func:`ntkdr.bench.main` (the same options as ``ntkdr bench``);
see benchmarks/README.md.
"""

import sys

from ntkdr.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
