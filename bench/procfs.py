"""What the benchmarks read from /proc and from daemons' pid files."""


def pss_kib(pid):
    """Proportional set size of `pid` in KiB (`/proc/PID/smaps_rollup`); 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


def pids_in(path):
    """[pid] from a pid file, or [] when it is missing or holds no number."""
    try:
        with open(path) as f:
            return [int(f.read().strip())]
    except (OSError, ValueError):
        return []
