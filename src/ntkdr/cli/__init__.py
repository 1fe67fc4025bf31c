"""The command line, ``ntkdr run | certify | train | kernel | compare | width | bench``: parsing, presets, command bodies, output, report and benchmarks.

Bad input exits with code 2 and one line on stderr (no traceback); ``--verbose`` shows
the traceback.  Heavy modules are imported inside the commands so ``ntkdr --help`` is fast.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence

from ntkdr.cli.parser import UsageError, build_parser

__all__ = ["main", "UsageError", "EXIT_BAD_INPUT"]

EXIT_BAD_INPUT = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    verbose = "--verbose" in argv
    try:
        if argv[:1] == ["bench"]:
            from ntkdr.cli.bench import main as bench_main

            return int(bench_main(argv[1:]) or 0)
        args = parser.parse_args(argv)
        if args.command is None:
            raise UsageError(
                "a command is required (run, certify, train, kernel, compare, width, bench); see ntkdr --help"
            )
        return int(args.func(args) or 0)
    except (
        ValueError,
        FileNotFoundError,
        PermissionError,
        IsADirectoryError,
        NotADirectoryError,
    ) as exc:
        if verbose:
            traceback.print_exc()
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"ntkdr: error: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("ntkdr: interrupted", file=sys.stderr)
        return 130
