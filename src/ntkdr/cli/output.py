"""What the command line prints: the summary table of a report."""

from __future__ import annotations

from typing import Any

from ntkdr.cli.report import SUMMARY_HEADER, summary_rows

__all__ = ["format_table", "print_summary"]


def format_table(rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, the header row underlined with dashes."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_summary(report: dict[str, Any], paths: dict[str, str]) -> None:
    """The headline table, the recommended k and where the report went."""
    print(format_table([SUMMARY_HEADER] + summary_rows(report)))
    rec = report["recommended_k"]
    if rec["k"] is not None:
        print(f"recommended k = {rec['k']} ({rec['kind']}), tolerance {rec['tolerance']}")
    else:
        print(f"no k in the grid is within tolerance {rec['tolerance']} of the dense values")
    cert = report.get("certificate")
    if cert:
        runs = [report["dense"].get("certificate")] + [
            c for e in report["sketched"] for c in (e.get("certificate") or [])
        ]
        status = [c["lambda_min"]["status"] for c in runs if c]
        print(
            f"certificate: {cert['method']}; lambda_min intervals: "
            f"{status.count('certified')} certified, {status.count('estimate')} estimate"
        )
    print(f"report: {paths['markdown']} ({report['wall_seconds']:.1f} s)")
