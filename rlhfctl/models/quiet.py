"""quiet_transformers: transformers' loading chatter off (progress bars, "newly initialised weights" notes).

Called bare, it stays quiet for the rest of the process (a worker that loads a model at start); as a context
manager, the previous settings come back on exit (a library call inside someone else's program).
"""

from __future__ import annotations

from typing import Any


class quiet_transformers:  # noqa: N801 - used like a function and like contextlib's lower-case managers
    """Warnings below ERROR and progress bars off from now on; restored when used as `with` and the block ends.
    The head of a value-head reward model shows up as "unexpected keys" of its base model, and a custom-code
    class as a type mismatch: both expected here, both noise in a training log."""

    def __init__(self) -> None:
        from transformers.utils import logging as hf_logging

        self._previous = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()

    def __enter__(self) -> "quiet_transformers":
        return self

    def __exit__(self, *exc: Any) -> None:
        from transformers.utils import logging as hf_logging

        verbosity, bars = self._previous
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
