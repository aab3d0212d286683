"""How the benchmarks report: medians with ranges, the machine, and their section of
BENCHMARKS.md (between `<!-- NAME -->` and `<!-- /NAME -->`, appended when missing)."""

import os
import statistics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def median_range(xs, fmt):
    """`median (min–max)` of the samples `xs`, each formatted by `fmt`."""
    return f"{fmt(statistics.median(xs))} ({fmt(min(xs))}–{fmt(max(xs))})"


def platform_line():
    """`N cores (CPU model)`, from /proc/cpuinfo."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({model})" if model else f"{os.cpu_count()} cores"


def write_section(name, text):
    """Replaces BENCHMARKS.md's section `name` with `text` (appending it when missing)."""
    path = os.path.join(ROOT, "BENCHMARKS.md")
    with open(path) as f:
        current = f.read()
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{start}\n{text}{end}"
    if start in current and end in current:
        current = current[: current.index(start)] + block + current[current.index(end) + len(end) :]
    else:
        current = current.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(current)
