"""How OpenRLHF spellings are applied: the kinds of table entry (alias, warn, refuse) and the Translation that
gathers what a command line or config file's spellings come to (field values, warnings, refused features)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Union

from rlhfctl.errors import UsageError

Nargs = Union[int, Literal["+"]]
Convert = Callable[[str, list[str]], dict[str, Any]]
TOTAL_LEN = "@total_len"  # OpenRLHF v0.10+ --max_len in train_ppo_ray: prompt + response, split in `finish`


@dataclass(frozen=True)
class Entry:
    """One OpenRLHF spelling and what rlhfctl does with it."""

    kind: Literal["alias", "warn", "refuse"]
    nargs: Nargs = 1  # values the option takes: 0 for a switch, 2 for a pair, "+" for one or more
    target: str | None = None  # alias: the schema field it sets (None when `convert` decides)
    convert: Convert | None = None  # alias: (spelling, values) -> {field: value}; may raise UsageError
    note: str = ""  # warn: why it has no effect here; refuse: the missing feature, as a sentence
    harmless: tuple[str, ...] = ()  # values (comma-joined) that ask for nothing missing: accepted silently
    fields: tuple[str, ...] = field(default=())  # alias with convert: the fields it may set (for --help)

    def targets(self) -> tuple[str, ...]:
        return (self.target,) if self.target else self.fields


def alias(target: str, nargs: Nargs = 1) -> Entry:
    return Entry("alias", nargs, target=target)


def switch(target: str) -> Entry:
    return Entry("alias", 0, target=target)


def transform(convert: Convert, *fields: str, nargs: Nargs = 1) -> Entry:
    return Entry("alias", nargs, convert=convert, fields=fields)


def warn(note: str, nargs: Nargs = 1, harmless: tuple[str, ...] = ()) -> Entry:
    return Entry("warn", nargs, note=note, harmless=harmless)


def refuse(note: str, nargs: Nargs = 1, harmless: tuple[str, ...] = ()) -> Entry:
    return Entry("refuse", nargs, note=note, harmless=harmless)


# ----------------------------------------------------------------------------------------------- value transforms


def _same(a: Any, b: Any) -> bool:
    """Two values of one option as given (strings, numbers, lists, bools) are the same value: 1 == "1.0"."""
    def form(v: Any) -> list[str]:
        return [str(x) for x in v] if isinstance(v, (list, tuple)) else str(v).split(",")

    return same_values(form(a), ",".join(form(b)))


def same_values(values: list[str], form: str) -> bool:
    """Whether `values` are the comma-joined `form`, comparing numbers as numbers (1e-3 == 0.001)."""
    wanted = form.split(",")
    if len(values) != len(wanted):
        return False
    for got, want in zip(values, wanted):
        try:
            if float(got) != float(want):
                return False
        except ValueError:
            if got.strip().lower() != want.strip().lower():
                return False
    return True


@dataclass
class Translation:
    """What a command line or config file's OpenRLHF options come to: field values and warnings to print."""

    values: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # gathered, so one run names every missing feature
    _source: dict[str, str] = field(default_factory=dict)

    def apply(self, entry: Entry, spelling: str, values: list[str] | None) -> None:
        """Record one option as given: `values` None means a YAML switch set to false (nothing asked)."""
        if values is None:  # `use_kl_loss: false` in a file: the switch is off
            if entry.kind == "alias" and entry.target:
                self._set(entry.target, False, spelling)
            return
        if any(same_values(values, form) for form in entry.harmless):
            return
        shown = f"{spelling} {' '.join(values)}".rstrip()
        if entry.kind == "refuse":
            self.refused.append(f"{shown}: {entry.note}")
            return
        if entry.kind == "warn":
            note = f"{shown}: {entry.note}"
            if note not in self.notes:
                self.notes.append(note)
            return
        try:
            produced = entry.convert(spelling, values) if entry.convert else {
                entry.target: True if entry.nargs == 0 else ",".join(values)}
        except UsageError as exc:
            self.refused.append(str(exc))
            return
        for name, value in produced.items():
            self._set(name, value, spelling)

    def _set(self, name: str, value: Any, spelling: str) -> None:
        earlier = self._source.get(name)
        if earlier is not None and earlier != spelling and not _same(self.values.get(name), value):
            # v0.11 has actor.* and critic.* copies of some optimizer options; rlhfctl has one of each.
            raise UsageError(f"{earlier} and {spelling} give different values ({self.values[name]!r} and {value!r}) "
                             "to what rlhfctl keeps as one option: give them the same value")
        self.values[name] = value
        self._source[name] = spelling

    def merged_with(self, given: dict[str, Any], spell: Callable[[str], str]) -> dict[str, Any]:
        """`given` (fields set by rlhfctl's own names) and the fields set through OpenRLHF spellings, as one
        mapping; one option set two ways to different values is an error (`spell(name)` is how it was given)."""
        for name, value in self.values.items():
            if name in given and not _same(given[name], value):
                raise UsageError(f"{spell(name)} {given[name]} and {self._source.get(name, name)} {value} set the "
                                 "same option to different values: give one")
        return {**given, **self.values}

    def finish(self, given: dict[str, Any]) -> None:
        """Turn a train_ppo_ray --max_len (prompt + response) into --prompt-max-len/--generate-max-len.

        `given` holds the schema fields set elsewhere (rlhfctl's own flags, or file keys). A --max_new_tokens or
        --generate_max_len given with it is kept and the prompt gets the rest, as OpenRLHF's budget does; without
        one OpenRLHF lets each response use what its prompt leaves, which rlhfctl's fixed budgets approximate by
        halves, and says so."""
        if self.refused:
            raise UsageError(self.refused[0] if len(self.refused) == 1 else
                             "options for features rlhfctl does not have:\n  " + "\n  ".join(self.refused))
        total = self.values.pop(TOTAL_LEN, None)
        if total is None:
            return
        spelling, raw = total
        try:
            length = int(raw)
        except ValueError:
            raise UsageError(f"{spelling}: a number of tokens is needed, not {raw!r}") from None
        known = {**given, **self.values}
        gen, prompt = known.get("generate_max_len"), known.get("prompt_max_len")
        if gen is not None and prompt is not None:
            if int(gen) + int(prompt) > length:
                raise UsageError(f"{spelling} {length} is less than --prompt-max-len {prompt} + --generate-max-len "
                                 f"{gen}: give one or the other")
            return
        if gen is None and prompt is None:
            gen = length // 2
            self.notes.append(f"{spelling} {length}: OpenRLHF lets each response use what its prompt leaves of "
                              f"{length} tokens; rlhfctl has fixed budgets and uses --prompt-max-len "
                              f"{length - gen} --generate-max-len {gen} (give --max-new-tokens to choose)")
        if gen is None:
            gen = length - int(prompt)
        if not 0 < int(gen) < length:
            raise UsageError(f"{spelling} {length}: must be more than the response budget ({gen} tokens)")
        self.values.setdefault("generate_max_len", int(gen))
        self.values.setdefault("prompt_max_len", length - int(gen))
