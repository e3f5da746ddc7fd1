"""Wall time of `scripts/setup.sh` on fresh clones: uv (the default) and pip (RLHFCTL_PIP=1), side by side.

Both set-ups run at the same time on two clones of this checkout's HEAD, so they see the same machine load and the
same registry; the ratio is the figure to quote. uv gets an empty cache of its own, as on a fresh machine. Prints one JSON line: each set-up's seconds, its exit status, the
installed package sets' difference (expected: only uv itself), and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _installed(venv: Path) -> set[str]:
    out = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "freeze", "--exclude-editable"],
                         capture_output=True, text=True).stdout
    return {line for line in out.splitlines() if line and not line.startswith("rlhfctl")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=None, help="where the clones go (default: a temporary folder)")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="rlhfctl-setup-"))
    load_before = os.getloadavg()[0]
    runs = {}
    for name, extra in (("uv", {}), ("pip", {"RLHFCTL_PIP": "1"})):
        clone = work / name
        shutil.rmtree(clone, ignore_errors=True)
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "RLHFCTL_PIP")} | extra
        env["UV_CACHE_DIR"] = str(work / f"{name}-uv-cache")
        runs[name] = (clone, time.perf_counter(), subprocess.Popen(
            ["bash", "scripts/setup.sh"], cwd=clone, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    figures: dict[str, object] = {}
    for name, (clone, start, proc) in runs.items():
        _, err = proc.communicate()
        figures[f"{name}_s"] = round(time.perf_counter() - start, 1)
        figures[f"{name}_rc"] = proc.returncode
        if proc.returncode:
            figures[f"{name}_stderr_tail"] = err.decode(errors="replace")[-400:]
    uv_pkgs, pip_pkgs = (_installed(runs[name][0] / ".venv") for name in ("uv", "pip"))
    print(json.dumps({"benchmark": "setup_time", **figures,
                      "pip_over_uv": round(figures["pip_s"] / figures["uv_s"], 2),  # type: ignore[operator]
                      "only_with_uv": sorted(uv_pkgs - pip_pkgs), "only_with_pip": sorted(pip_pkgs - uv_pkgs),
                      "load_before": round(load_before, 1), "load_after": round(os.getloadavg()[0], 1)}))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
