"""The argument parser of ``ntkdr run | certify | train | kernel | compare | width | bench`` and its small value parsers.

Each subcommand's ``func`` is its body in :mod:`ntkdr.cli.commands` (compare and width: in
:mod:`ntkdr.cli.studies`); bad arguments raise
:class:`UsageError` (one line, exit code 2) instead of argparse's usage block.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
from collections.abc import Callable

from ntkdr.memory import parse_bytes


def _command(name: str, module: str = "commands") -> Callable[[argparse.Namespace], int]:
    """The body of command ``name`` in ``ntkdr.cli.<module>``, imported when it runs."""

    def run(args: argparse.Namespace) -> int:
        body = getattr(importlib.import_module(f"ntkdr.cli.{module}"), f"{name}_command")
        return int(body(args) or 0)

    return run


class UsageError(ValueError):
    """Raised for bad command-line arguments; reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    # argparse prints usage + message over several lines; the CLI contract is one line.
    def error(self, message: str) -> None:  # type: ignore[override]
        command = self.prog.split(" ", 1)[1] if " " in self.prog else ""
        raise UsageError(f"{command}: {message}" if command else message)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _str_list(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError("expected at least one name")
    return values


def _classes(text: str) -> tuple[int, int]:
    parts = text.split(",")
    try:
        a, b = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected two integer labels 'A,B', got {text!r}"
        ) from None
    if a == b:
        raise argparse.ArgumentTypeError(f"the two classes must differ, got {text!r}")
    return a, b


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    src = g.add_mutually_exclusive_group()
    src.add_argument(
        "--data",
        metavar="PATH",
        help="data file: .npz (X, y), .npy, .csv (last column = label) or MNIST IDX",
    )
    src.add_argument(
        "--dataset",
        metavar="NAME",
        help="bundled or synthetic data set (default: mnist, the embedded subset)",
    )
    g.add_argument(
        "--classes", type=_classes, metavar="A,B", help="binary +-1 task from two labels"
    )
    g.add_argument(
        "--n-train", type=int, metavar="N", help="training examples (default: data set's own)"
    )
    g.add_argument("--n-test", type=int, metavar="N", help="test examples")


def _add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float64",
        help="floating point type (default float64)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or tables")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="tracebacks on error; the certificate method, why, and a line per configuration",
    )


def _add_certificate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--method",
        choices=("auto", "exact", "cholesky", "cholesky-inplace", "matrix-free"),
        help="certificate method (default auto: by n and the memory budget; --verbose says which)",
    )
    p.add_argument(
        "--max-memory",
        type=_bytes,
        metavar="SIZE",
        help="memory budget of the certificate, e.g. 8GiB (default: the memory available)",
    )
    p.add_argument(
        "--lower-bound",
        choices=("auto", "proven", "none"),
        help="proven: every lambda_min's lower end proven by a float64 factorization (~1e-5 "
        "wide); none: no proof, intervals marked estimate, a third of the time; auto "
        "(default): proven up to n = 5000",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ntkdr",
        description="NTK with dimensionality reduction (Ailon & Shit 2022): kernels, wide nets, guarantees, costs.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser(
        "run",
        help="main job: dense vs factorized networks, guarantees, costs, report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Dense vs factorized (W = U S) two-layer ReLU networks: lambda_min, generalization bound,\n"
        "training curves vs theory, test error, costs; writes report.json, report.md and plots.",
        epilog="examples:\n  ntkdr run\n  ntkdr run --quick --output /tmp/rep\n"
        "  ntkdr run --dataset digits --sketches gaussian,srht --ks 8,16,32 --seeds 5\n"
        "  ntkdr run --data mydata.npz --classes 0,1 --width 4096 --steps 500",
    )
    _add_data_args(p)
    p.add_argument("--width", type=int, help="hidden width m (default 1024)")
    p.add_argument("--steps", type=int, help="gradient-descent steps (default 100)")
    p.add_argument(
        "--sketches",
        type=_str_list,
        metavar="K1,K2",
        help="sketch kinds (default gaussian,sparse,srht,pca)",
    )
    p.add_argument(
        "--ks", type=_int_list, metavar="k1,k2", help="sketch dimensions (default 16,32,64,128,256)"
    )
    p.add_argument("--seeds", type=int, help="sketch seeds per (kind, k) (default 3)")
    p.add_argument(
        "--tolerance", type=float, help="relative tolerance for the recommended k (default 0.1)"
    )
    p.add_argument(
        "--output",
        default="ntkdr-report",
        metavar="DIR",
        help="report directory (default ./ntkdr-report/)",
    )
    p.add_argument("--quick", action="store_true", help="small, fast version (seconds)")
    _add_certificate_args(p)
    _add_common_args(p)
    p.set_defaults(func=_command("run"))

    p = sub.add_parser(
        "certify",
        help="recommend the sketch dimension k for a data set (kernels only, no training)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Smallest k whose lambda_min ratio and generalization-bound ratio stay within --eps of the\n"
        "dense values, over several sketch seeds, with the evidence table.",
        epilog="examples:\n  ntkdr certify --data mydata.npz --eps 0.1\n"
        "  ntkdr certify --dataset digits --kinds gaussian,srht --ks 8,16,32,64",
    )
    _add_data_args(p)
    p.add_argument(
        "--eps", type=float, default=0.1, dest="tolerance", help="relative tolerance (default 0.1)"
    )
    p.add_argument(
        "--kinds",
        type=_str_list,
        dest="sketches",
        metavar="K1,K2",
        help="sketch kinds (default gaussian,sparse,srht,pca)",
    )
    p.add_argument(
        "--ks", type=_int_list, metavar="k1,k2", help="sketch dimensions (default 16,32,64,128,256)"
    )
    p.add_argument("--seeds", type=int, help="sketch seeds per (kind, k) (default 3)")
    p.add_argument("--output", metavar="FILE.json", help="also write the evidence as JSON")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from FILE.json.parts/ (needs --output)",
    )
    _add_certificate_args(p)
    _add_common_args(p)
    p.set_defaults(func=_command("certify"))

    p = sub.add_parser(
        "train",
        help="train one dense or factorized two-layer network; writes model.pt and history.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  ntkdr train --out run1\n  ntkdr train --sketch srht --k 64 --width 4096 --steps 500 --out run2\n"
        "  ntkdr train --out run2 --resume",
    )
    _add_data_args(p)
    p.add_argument("--sketch", help="sketch kind for the factorized net (default: dense)")
    p.add_argument("--k", type=int, help="sketch dimension (required with --sketch)")
    p.add_argument("--width", type=int, default=1024, help="hidden width m (default 1024)")
    p.add_argument("--steps", type=int, default=100, help="training steps (default 100)")
    p.add_argument(
        "--lr",
        help="step size: a number, 'auto' (1/lambda_max of the NTK at init) or 'theory' (lambda_0/n^2)",
    )
    p.add_argument(
        "--optimizer", default="gd", choices=("gd", "sgd", "adam"), help="optimizer (default gd)"
    )
    p.add_argument("--batch-size", type=int, help="mini-batch size for sgd / adam")
    p.add_argument("--train-output", action="store_true", help="also train the output layer a")
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output directory (model.pt, history.json, checkpoint.pt)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=50,
        metavar="N",
        help="checkpoint every N steps (default 50)",
    )
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    _add_common_args(p)
    p.set_defaults(func=_command("train"))

    p = sub.add_parser(
        "kernel",
        help="compute one analytic NTK / NNGP matrix of a data set into a .npy file (tiled)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  ntkdr kernel --dataset digits --out K.npy\n"
        "  ntkdr kernel --data X.npy --sketch srht --k 256 --depth 3 --out K.npy --max-memory 2GB\n"
        "  ntkdr kernel --dataset digits --activation erf --depth 3 --b-std 0.1 --out K.npy\n"
        "  ntkdr kernel --dataset digits --activation leaky_relu --act-param alpha=0.2 --depth 2 --out K.npy",
    )
    _add_data_args(p)
    p.add_argument("--sketch", help="sketch the inputs first (kind)")
    p.add_argument("--k", type=int, help="sketch dimension (with --sketch)")
    p.add_argument(
        "--depth", type=int, help="deep FC NTK / NNGP of this depth (default: two-layer H1)"
    )
    p.add_argument(
        "--activation",
        choices=ACTIVATION_CHOICES,
        help="with --depth: the nonlinearity (default relu)",
    )
    p.add_argument(
        "--act-param",
        type=_act_param,
        action="append",
        metavar="NAME=VALUE",
        help="an activation parameter, repeatable (leaky_relu alpha; abrelu a, b; erf a, b, c)",
    )
    p.add_argument("--w-std", type=float, help="with --depth: weight std (default sqrt 2)")
    p.add_argument("--b-std", type=float, help="with --depth: bias std (default 0)")
    p.add_argument("--w-out", type=float, help="with --depth: readout weight std (default 1)")
    p.add_argument(
        "--layers",
        default="first",
        choices=("first", "both"),
        help="two-layer kernel: H1 or H1 + H2",
    )
    p.add_argument(
        "--which",
        default="ntk",
        choices=("ntk", "nngp"),
        help="with --depth: which kernel (default ntk)",
    )
    p.add_argument("--tile", type=int, help="rows per tile")
    p.add_argument(
        "--max-memory",
        type=_bytes,
        help="working-set budget, e.g. 512MB, 2GB (10^9 bytes) or 2GiB (2^31 bytes)",
    )
    p.add_argument(
        "--out", required=True, metavar="FILE.npy", help="output .npy file (written atomically)"
    )
    _add_common_args(p)
    p.set_defaults(func=_command("kernel"))

    _add_study_parsers(sub)

    # `ntkdr bench ...` forwards its arguments to the benchmark runner (ntkdr.cli.bench.main).
    sub.add_parser(
        "bench",
        help="performance benchmarks (see `ntkdr bench --help`)",
        add_help=False,
    )
    return parser


def _fraction_or_int(text: str) -> int | float:
    with contextlib.suppress(ValueError):  # "64" is a k, "0.25" a fraction of in_features
        return int(text)
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer k or a fraction in (0, 1], got {text!r}"
        ) from None


def _add_study_parsers(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="a model of yours against its factorized copy: their empirical NTKs side by side",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Builds the model from a factory package.module:function (called with no arguments,\n"
        "or with d=<features> if it takes a parameter d), factorizes a copy (every nn.Linear with\n"
        "in_features > k) and compares their empirical NTKs on the data: lambda_min and bound\n"
        "ratios, relative Frobenius distance, kernel alignment, parameters, seconds.",
        epilog="examples:\n  ntkdr compare --model mypkg.models:make_mlp --data mydata.npz --k 64\n"
        "  ntkdr compare --model mypkg.models:make_mlp --dataset digits --k 0.25 --kind srht",
    )
    _add_data_args(p)
    p.add_argument("--model", required=True, metavar="PKG.MODULE:FUNCTION", help="model factory")
    p.add_argument(
        "--k",
        required=True,
        type=_fraction_or_int,
        help="sketch dimension: an integer, or a fraction of each layer's in_features",
    )
    p.add_argument(
        "--kind",
        default="gaussian",
        choices=("gaussian", "sparse", "srht"),
        help="sketch kind (default gaussian)",
    )
    p.add_argument(
        "--init",
        default="fresh",
        choices=("fresh", "project"),
        help="fresh: U drawn like the layer's init; project: U = W S^+ (default fresh)",
    )
    p.add_argument(
        "--n", type=int, default=256, help="rows of the data used (default 256; kernels are n x n)"
    )
    p.add_argument(
        "--k-proj", type=int, default=256, help="projections when a Jacobian does not fit"
    )
    p.add_argument("--json", metavar="FILE", help="also write the comparison as JSON (atomically)")
    _add_common_args(p)
    p.set_defaults(func=_command("compare", "studies"))

    p = sub.add_parser(
        "width",
        help="how wide is wide enough: NTK fidelity vs width, dense and factorized",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="For widths on a grid and several seeds: the empirical NTK's distance from its\n"
        "infinite-width limit, GD's distance from the NTK prediction, weight movement and flipped\n"
        "ReLU patterns, for dense and factorized two-layer and deep nets; the width reaching the\n"
        "tolerance next to the theory's, and the cost there. Writes width.json, width.md, plots.",
        epilog="examples:\n  ntkdr width --output width-report\n"
        "  ntkdr width --dataset digits --widths 32,128,512 --k 16 --output w",
    )
    _add_data_args(p)
    p.add_argument(
        "--widths",
        type=_int_list,
        metavar="m1,m2",
        default=[64, 128, 256, 512, 1024],
        help="widths (default 64,128,256,512,1024)",
    )
    p.add_argument("--seeds", type=int, default=3, help="networks per width (default 3)")
    p.add_argument("--k", type=int, default=64, help="sketch dimension (default 64)")
    p.add_argument(
        "--kind",
        default="gaussian",
        choices=("gaussian", "sparse", "srht"),
        help="sketch kind (default gaussian)",
    )
    p.add_argument(
        "--depth", type=int, default=2, help="hidden layers of the deep nets (default 2)"
    )
    p.add_argument("--steps", type=int, default=20, help="GD steps (default 20)")
    p.add_argument("--tolerance", type=float, default=0.1, help="deviation tolerance (default 0.1)")
    p.add_argument("--n-max", type=int, default=128, help="rows used (default 128)")
    p.add_argument(
        "--networks",
        type=_str_list,
        metavar="N1,N2",
        help="subset of two_layer_dense,two_layer_factorized,deep_dense,deep_factorized",
    )
    p.add_argument(
        "--output",
        default="ntkdr-width",
        metavar="DIR",
        help="output directory (default ./ntkdr-width/)",
    )
    _add_common_args(p)
    p.set_defaults(func=_command("width", "studies"))


#: the activations of ntkdr.kernels.activations.ACTIVATIONS (listed here: --help stays cheap)
ACTIVATION_CHOICES = ("relu", "leaky_relu", "abrelu", "abs", "erf", "gelu", "sign", "identity")


def _act_param(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        if not sep or not name.strip():
            raise ValueError
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE (e.g. alpha=0.2), got {text!r}"
        ) from None


def _bytes(text: str) -> float:
    try:
        return parse_bytes(text, "size")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _version() -> str:
    from ntkdr import __version__

    return f"ntkdr {__version__}"
