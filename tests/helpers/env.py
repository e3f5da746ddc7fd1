"""Where things are, and the one environment every subprocess of the tests runs in."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout: rlhfctl/, examples/, benchmarks/
TESTS = ROOT / "tests"
GALLERY = TESTS / "reward_gallery"
ARITHMETIC = ROOT / "examples" / "arithmetic"

# This checkout first on PYTHONPATH (subprocesses and the Ray workers they start import it, not another install);
# offline Hub; Ray without token auth or usage stats; no API key leaking in from the developer's shell; the venv's
# scripts on PATH (`ray`, `rlhfctl`).
ENV: dict[str, str] = {
    **{k: v for k, v in os.environ.items() if k != "RLHFCTL_API_KEY"},
    "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    "HF_HUB_OFFLINE": "1",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
    "WANDB_SILENT": "true",
    "PYTHONWARNINGS": "ignore::FutureWarning",
}
