"""bench/results.md: every part's table in one document, with the plots.

Each part writes its own file (anchors.md, calls.md...) with the command,
date and machine that produced it; `assemble` puts them one after another
under one title, each part's headings one level down, with its plot below
it. It runs after every `python -m bench`, so results.md always holds the
latest of each part: after `--only calls` the other sections keep the date
of the run that last wrote them, which their own headers say.
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.report import header

__all__ = ["PARTS", "assemble"]

# part -> (its file, its plot or "", what the plot shows)
PARTS: dict[str, tuple[str, str, str]] = {
    "anchors": ("anchors.md", "throughput.png", "throughput against calls in flight"),
    "calls": ("calls.md", "latency-cdf.png", "latency CDF per call and tracing mode"),
    "tracing": ("tracing.md", "", ""),
    "checkout": ("checkout.md", "", ""),
    "arrival": ("arrival.md", "checkout-arrival.png", "checkout latency against arrival rate"),
    "gateway": ("gateway.md", "", ""),
    "mtls": ("mtls.md", "", ""),
    "mesh": ("mesh.md", "", ""),
    "stack": ("stack.md", "", ""),
}
_HEADING = re.compile(r"^(#+) ", re.MULTILINE)


def _demoted(text: str) -> str:
    """Every Markdown heading one level down, "# Benchmark: " dropped from the title."""
    text = text.replace("# Benchmark: ", "# ", 1)
    return _HEADING.sub(lambda m: f"#{m.group(1)} ", text)


def assemble(directory: Path, command: str) -> str:
    """results.md's text from the part files in `directory` (a missing one says so)."""
    lines = [
        "# shopmesh benchmarks: every table and plot",
        *header("", command)[1:],  # its command, date and machine lines
        "",
        "Each section below is one part of `make bench` (`python -m bench --only PART` reruns"
        " it), copied from its own file with the command, date and machine that produced it;"
        " [README.md](README.md) says how to read them. The lines above name the run that"
        " assembled this file. Contents: "
        + ", ".join(f"[{part}](#{part})" for part in PARTS)
        + ".",
    ]
    for part, (name, plot, caption) in PARTS.items():
        lines += ["", f'<a id="{part}"></a>', ""]
        path = directory / name
        if not path.is_file():
            lines.append(
                f"## {part}\n\nNot run yet: `python -m bench --only {part}` writes {name}."
            )
            continue
        lines.append(_demoted(path.read_text()).rstrip("\n"))
        if plot and (directory / plot).is_file():
            lines += ["", f"![{caption}]({plot})"]
    return "\n".join(lines) + "\n"
