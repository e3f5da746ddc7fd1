"""`--plot FILE.png`: throughput and p99 latency against concurrency, the two curves a capacity plan reads."""

from __future__ import annotations

from rlhfctl.bench.runner import BenchResult
from rlhfctl.errors import RlhfctlError, UsageError


def require_matplotlib() -> None:
    """Checked before the run, so a missing plotting library does not waste one."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'rlhfctl[plot]' (or matplotlib)") from None


def plot(result: BenchResult, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    levels = result.levels
    x = [lv.concurrency for lv in levels]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    left.plot(x, [lv.sample_throughput for lv in levels], "o-", label="samples/s")
    if result.settings.get("texts_per_request", 1) > 1:
        left.plot(x, [lv.request_throughput for lv in levels], "s--", label="requests/s")
    left.set_ylabel("throughput (per second)")
    left.set_ylim(bottom=0)
    left.legend()
    answered = [(lv.concurrency, lv.p99_e2el_ms, lv.median_e2el_ms) for lv in levels if lv.p99_e2el_ms is not None]
    right.plot([a[0] for a in answered], [a[1] for a in answered], "o-", color="tab:red", label="p99")
    right.plot([a[0] for a in answered], [a[2] for a in answered], "o--", color="tab:gray", label="median")
    right.set_ylabel("latency (ms)")
    right.set_ylim(bottom=0)
    right.legend()
    for ax in (left, right):
        ax.set_xlabel("concurrency (requests in flight)")
        if len(set(x)) > 1 and max(x) / min(x) >= 8:
            ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(set(x)), [str(c) for c in sorted(set(x))])
        ax.grid(alpha=0.3)
    fig.suptitle(f"bench-rm: {result.target} ({result.settings['texts_per_request']} text(s) per request)")
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise RlhfctlError(f"--plot {path}: cannot write: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
