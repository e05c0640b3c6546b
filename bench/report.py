"""Benchmark results as data, and BENCHMARKS.md written from them.

Every benchmark's outcome is a result file (JSON): which benchmark, the command that ran it, when,
how long it took, its exit code, and its ``figures``. A figure is one number with its unit, the
target it is measured against (as the connector issues state it) and whether it met it (``None``
where there is no target: a figure reported for information). ``bench/run_all.py`` writes one result
file per benchmark (the scripts' own ``--json`` files, or its adapters' reading of their output);
``write_report`` turns a folder of them into BENCHMARKS.md with the machine it ran on.

    .venv/bin/python -m bench.report [--results .bench/results] [--out BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: Where run_all keeps one result file per benchmark.
DEFAULT_RESULTS = ROOT / ".bench" / "results"
#: The report, at the repository's root.
DEFAULT_REPORT = ROOT / "BENCHMARKS.md"


@dataclass
class Figure:
    """One measured number. ``met``: True/False against ``target``; None when there is no target."""

    label: str
    value: float | int | str | None
    unit: str = ""
    target: str = ""
    met: bool | None = None
    note: str = ""

    def shown(self) -> str:
        if self.value is None:
            return "not measured"
        if isinstance(self.value, float) and self.value.is_integer():
            text = f"{int(self.value):,}"
        elif isinstance(self.value, float):
            text = f"{self.value:,.2f}" if abs(self.value) < 100 else f"{self.value:,.0f}"
        else:
            text = f"{self.value:,}" if isinstance(self.value, int) else str(self.value)
        return f"{text} {self.unit}".strip()

    def verdict(self) -> str:
        return {True: "met", False: "**not met**", None: "-"}[self.met]


@dataclass
class Result:
    """One benchmark run: its figures and how it ran."""

    bench: str
    title: str
    command: str
    figures: list[Figure] = field(default_factory=list)
    started_at: str = ""
    seconds: float = 0.0
    returncode: int = 0
    notes: list[str] = field(default_factory=list)
    output_file: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Result:
        figures = [Figure(**f) for f in data.get("figures", [])]
        return cls(**{**data, "figures": figures})

    def print_table(self, *, value_width: int = 14) -> None:
        """Prints the title, one line per figure (with its target and verdict) and the notes."""
        print(f"{self.title} ({self.seconds:.0f} s)")
        width = max((len(f.label) for f in self.figures), default=10)
        for fig in self.figures:
            target = f"  target {fig.target}: {fig.verdict()}" if fig.target else ""
            print(f"  {fig.label:<{width}}  {fig.shown():>{value_width}}{target}")
        for note in self.notes:
            print(f"  note: {note}")

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_json(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def load_results(folder: str | Path) -> list[Result]:
    """Every result file in ``folder`` (``*.json``), in file-name order."""
    results = []
    for path in sorted(Path(folder).glob("*.json")):
        results.append(Result.from_json(json.loads(path.read_text(encoding="utf-8"))))
    return results


def met(value: float | None, *, at_most: float | None = None, at_least: float | None = None,
        below: float | None = None) -> bool | None:
    """Whether ``value`` meets a bound (None when there is no value)."""
    if value is None:
        return None
    if at_most is not None and value > at_most:
        return False
    if below is not None and value >= below:
        return False
    return not (at_least is not None and value < at_least)


# -- the machine ------------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return 0.0


def _disk() -> str:
    try:
        out = subprocess.run(["df", "-h", "--output=source,fstype,size", str(ROOT)], capture_output=True, text=True,
                             timeout=5, check=False).stdout.splitlines()
        return " ".join(out[-1].split()) if len(out) > 1 else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cpus": str(os.cpu_count() or "?"),
        "cpu model": _cpu_model(),
        "memory": f"{_memory_gib():.1f} GiB",
        "disk (repository)": _disk(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load average at report time": " ".join(f"{x:.1f}" for x in load),
    }


# -- the report ------------------------------------------------------------------------------------

def render(results: Sequence[Result], *, command: str, generated_at: datetime | None = None) -> str:
    """BENCHMARKS.md for ``results``."""
    when = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# Benchmarks", "",
             f"Generated by `{command}` on {when}. Every figure comes from a benchmark script in `bench/` run "
             "against the simulators on loopback; each is shown beside its target from the connector issues. "
             "`make bench` runs them all again and rewrites this file.", "", "## Machine", ""]
    lines += [f"- {name}: {value}" for name, value in machine().items()]
    lines += ["", "The machine is shared (other processes run during the benchmarks: see the load average), "
              "so throughput figures are lower bounds.", ""]
    missed = [(r, f) for r in results for f in r.figures if f.met is False]
    lines += ["## Summary", ""]
    with_target = sum(1 for r in results for f in r.figures if f.met is not None)
    lines.append(f"{with_target - len(missed)} of {with_target} figures with a target meet it.")
    if missed:
        lines += ["", "Not met:", ""]
        lines += [f"- {r.title}: {f.label}: {f.shown()} (target {f.target})" + (f"; {f.note}" if f.note else "")
                  for r, f in missed]
    failed = [r for r in results if r.returncode != 0]
    if failed:
        lines += ["", "Benchmarks that did not finish cleanly:", ""]
        lines += [f"- {r.title}: exit code {r.returncode}" + (f" ({'; '.join(r.notes)})" if r.notes else "")
                  for r in failed]
    for result in results:
        lines += ["", f"## {result.title}", "", f"`{result.command}` ({result.seconds:.0f} s, {result.started_at})", ""]
        if result.figures:
            lines += ["| figure | value | target | |", "|---|---:|---|---|"]
            for fig in result.figures:
                label = fig.label + (f" ({fig.note})" if fig.note else "")
                lines.append(f"| {_cell(label)} | {_cell(fig.shown())} | {_cell(fig.target or '-')} | {fig.verdict()} |")
        else:
            lines.append("No figures: see the notes.")
        if result.notes:
            lines += [""] + [f"- {note}" for note in result.notes]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_report(results_dir: str | Path = DEFAULT_RESULTS, out: str | Path = DEFAULT_REPORT, *,
                 command: str = "make bench") -> Path:
    """Writes BENCHMARKS.md from every result file in ``results_dir``; returns its path."""
    results = load_results(results_dir)
    Path(out).write_text(render(results, command=command), encoding="utf-8")
    return Path(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--results", default=str(DEFAULT_RESULTS), help="folder of result files")
    parser.add_argument("--out", default=str(DEFAULT_REPORT))
    parser.add_argument("--command", default="make bench", help="the command named in the report")
    args = parser.parse_args(argv)
    path = write_report(args.results, args.out, command=args.command)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
