"""check-reward's library: prove a reward function or server right against a dataset's labels before training.

`run_checks(cfg) -> Report`; `render.print_report` and `Report.to_json` show it.
"""

from rlhfctl.checks.report import Check, Report
from rlhfctl.checks.runner import run_checks

__all__ = ["Check", "Report", "run_checks"]
