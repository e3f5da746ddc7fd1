"""A reward model read from a named field of its own output (--reward-output): custom code such as ArmoRM's, which
returns its reward as `score`, or any model whose reward is one column of `logits`.

The model's own forward decides where it pools; the batch is padded on the right with an attention mask, as for
the value-head path. The field is checked on a probe at load, so a wrong --reward-output fails at start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlhfctl.errors import UsageError
from rlhfctl.models.quiet import quiet_transformers


def parse_output(spec: str | None) -> tuple[str | None, int | None]:
    """'score' -> ('score', None); 'logits:0' -> ('logits', 0); None -> (None, None) (choose at the probe)."""
    if spec is None:
        return None, None
    field, _, index = spec.partition(":")
    return field, (int(index) if index else None)


def _fields(output: Any) -> dict[str, Any]:
    if isinstance(output, torch.Tensor):
        return {"output": output}
    if isinstance(output, dict):  # ModelOutput is an OrderedDict of the fields that are set
        return {k: v for k, v in output.items() if isinstance(v, torch.Tensor)}
    if isinstance(output, (tuple, list)):
        return {str(i): v for i, v in enumerate(output) if isinstance(v, torch.Tensor)}
    return {}


class OutputRewardModel(nn.Module):
    """Any Hugging Face model + the output field (and column) holding one reward per row."""

    def __init__(self, model: nn.Module, field: str | None, index: int | None, *, spec: str | None,
                 mean: float = 0.0, std: float = 1.0, normalize: bool = False) -> None:
        super().__init__()
        self.model = model
        self.field, self.index, self.spec = field, index, spec
        self.mean, self.std, self.normalize = float(mean), float(std), bool(normalize)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def read(self, output: Any, rows: int) -> torch.Tensor:
        """The reward column of `output`, shape (rows,), or a UsageError naming what the output holds."""
        fields = _fields(output)
        shown = ", ".join(f"{k} {tuple(v.shape)}" for k, v in fields.items()) or "no tensors"
        field = self.field
        if field is None:  # custom code without --reward-output: `score`, else a one-column `logits`
            field = "score" if "score" in fields else "logits"
        if field not in fields:
            raise UsageError(f"--reward-output {self.spec or field}: the model's output has no field {field!r} "
                             f"(it has: {shown})")
        value = fields[field].float()
        if value.dim() == 2 and self.index is not None:
            if self.index >= value.shape[1]:
                raise UsageError(f"--reward-output {self.spec}: {field} has {value.shape[1]} columns, so index "
                                 f"{self.index} is out of range (0-{value.shape[1] - 1})")
            value = value[:, self.index]
        elif value.dim() == 2 and value.shape[1] == 1:
            value = value[:, 0]
        if value.shape != (rows,):
            hint = f"pick a column with --reward-output {field}:INDEX" if value.dim() == 2 else "name another field"
            raise UsageError(f"--reward-output {self.spec or field}: {field} has shape {tuple(fields[field].shape)}, "
                             f"not one number per text; {hint}")
        return value

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        output = self.model(input_ids=input_ids, attention_mask=attention_mask)
        rewards = self.read(output, input_ids.size(0))
        if self.normalize:
            rewards = (rewards - self.mean) / self.std
        return rewards


def load_output_model(folder: Path, auto_map: dict[str, str], *, reward_output: str | None, trust_remote_code: bool,
                      kwargs: dict[str, Any], mean: float, std: float, normalize: bool) -> OutputRewardModel:
    """The whole model through the Auto class its auto_map names (AutoModelForSequenceClassification first, as
    ArmoRM's usage loads it), else AutoModelForSequenceClassification; probed once."""
    import transformers

    name = next((k for k in ("AutoModelForSequenceClassification", "AutoModel") if k in auto_map),
                next((k for k in auto_map if k.startswith("AutoModel")), "AutoModelForSequenceClassification"))

    auto = getattr(transformers, name)
    with quiet_transformers():
        try:
            model = auto.from_pretrained(folder, trust_remote_code=trust_remote_code, **kwargs)
        except (OSError, ValueError, KeyError, ImportError, AttributeError) as exc:
            raise UsageError(f"--reward-pretrain {folder}: cannot load it with {name}: {type(exc).__name__}: "
                             f"{exc}") from None
    model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu")).eval().requires_grad_(False)
    field, index = parse_output(reward_output)
    wrapped = OutputRewardModel(model, field, index, spec=reward_output, mean=mean, std=std, normalize=normalize)
    probe = torch.ones((1, 2), dtype=torch.long, device=wrapped.device)
    with torch.inference_mode():
        wrapped(probe, torch.ones_like(probe))  # a missing field or a bad index fails here, at load
    return wrapped
