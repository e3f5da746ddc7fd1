"""Train the arithmetic demo's two small models, deterministically, and save them next to this file.

policy/        a character-level Llama (hidden 128, 4 layers, 4 heads of 32: about 1.05 M parameters) trained by
               supervised fine-tuning on train.jsonl answers written by a *noisy teacher*: on a problem that needs a
               carry or a borrow, the teacher forgets it 80% of the time ("17+25=32", "42-17=35"; additions are
               then done column by column, modulo 10). The policy learns exactly that: it gets the problems without
               a carry right, writes the teacher's mistake on the others, and samples the right answer there only
               now and then. Its supervised training has converged (more steps on the same data do not move
               held-out accuracy, see --check-plateau), so whatever RL adds on top of it is RL's: the reward knows
               the right answer, the demonstrations did not.
judge/         (--judge) a LlamaForCausalLM judge initialised from the policy and trained to answer "1" after
               "12+35=47=" when the answer is right and "0" when it is wrong (judge_template.jinja renders that
               text); served with `serve-rm --judge-model`, its reward is P("1") renormalised over "0" and "1".
judge_reference/ (--judge-reference) the same judge trained on "12+35=47=47=": the response, then the reference
               answer (judge_reference_template.jinja), so it compares rather than computes.
reward_model/  a LlamaForSequenceClassification (num_labels=1) initialised from the policy's backbone, as RLHF
               reward models are initialised from the SFT model, and trained with the pairwise (Bradley-Terry) loss
               on correct vs wrong answers to the train problems (the teacher's carry mistakes among the wrong ones).

Everything is seeded, the data order is fixed and torch runs on a fixed number of threads, so a second run writes
byte-identical safetensors on the same machine and thread count.

    python examples/arithmetic/train_models.py                     # both models: about 4-5 minutes, 1 thread
    python examples/arithmetic/train_models.py --check-plateau 600 # also: 600 more SFT steps, accuracy printed
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification, PreTrainedTokenizerFast

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from evaluate import score as greedy_accuracy  # noqa: E402
from make_data import ALPHABET, read_jsonl  # noqa: E402
from rlhfctl.models.tiny import build_char_tokenizer  # noqa: E402

SEED = 0
MAX_LEN = 64  # positions the saved models accept: a prompt is 6 characters, an answer at most 3 + eos
NOISE = 0.8  # how often the teacher forgets a carry or a borrow
POLICY = dict(hidden_size=128, num_layers=4, num_heads=4)  # head_dim 32: vLLM's CPU attention needs >= 32
SFT = dict(steps=1200, batch_size=128, lr=1e-3, warmup=100, final_lr_fraction=0.05, eval_every=200)
JUDGE = dict(steps=1000, batch_size=64, lr=3e-4, warmup=50, final_lr_fraction=0.05, eval_every=200)
RM = dict(steps=1000, batch_size=64, lr=3e-4, warmup=50, final_lr_fraction=0.05, eval_every=200)


# ------------------------------------------------------------------------------------------------ the task
def parse(prompt: str) -> tuple[int, str, int]:
    """Split a prompt: "12+35=" -> (12, "+", 35)."""
    return int(prompt[:2]), prompt[2], int(prompt[3:5])


def needs_carry(prompt: str) -> bool:
    """Whether the column method needs a carry (either column of an addition) or a borrow (a subtraction)."""
    a, op, b = parse(prompt)
    if op == "+":
        return a % 10 + b % 10 >= 10 or a + b >= 100
    return a % 10 < b % 10


def forgot_carry(prompt: str) -> str:
    """The teacher's mistake: each column computed on its own, carries and borrows dropped.

    "17+25=" -> "32", "57+68=" -> "15" (digit-wise sum modulo 10), "42-17=" -> "35" (the borrow never reaches
    the tens). Equal to the right answer when no carry is needed.
    """
    a, op, b = parse(prompt)
    if op == "+":
        return str((a // 10 + b // 10) % 10 * 10 + (a + b) % 10)
    return str(a - b + 10 if a % 10 < b % 10 else a - b)


def noisy_answers(rows: list[dict], epoch: int, seed: int = SEED, noise: float = NOISE) -> list[str]:
    """The teacher's answers for one epoch: drawn afresh each epoch, so the policy learns the teacher's error
    rate rather than memorising which rows were wrong."""
    rng = random.Random(f"{seed}-teacher-{epoch}")
    return [
        forgot_carry(r["input"]) if needs_carry(r["input"]) and rng.random() < noise else r["answer"] for r in rows
    ]


def wrong_answer(prompt: str, answer: str, rng: random.Random) -> str:
    """A plausible wrong answer: a units digit off by one or two (a quarter of the time: the hardest to tell), the
    forgotten carry (the policy's own mistake) when there is one, else off by ten, a truncated or lengthened number,
    or a random one."""
    right = int(answer)
    roll = rng.random()
    kinds: list[Callable[[], str]] = [
        lambda: str(right + rng.choice((-10, 10))),
        lambda: answer[:-1] if len(answer) > 1 else answer + str(rng.randrange(10)),
        lambda: answer + str(rng.randrange(10)),
        lambda: str(rng.randrange(200)),
    ]
    while True:
        if roll < 0.25:
            wrong = str(right + rng.choice((-2, -1, 1, 2)))
        elif roll < 0.625 and needs_carry(prompt):
            wrong = forgot_carry(prompt)
        else:
            wrong = rng.choice(kinds)()
        if wrong != answer and not wrong.startswith("-"):
            return wrong
        roll = 1.0  # fall back on the generic kinds


# ------------------------------------------------------------------------------------------------ training
def lr_at(step: int, total: int, peak: float, warmup: int, final_fraction: float) -> float:
    """Linear warm-up, then cosine decay to `final_fraction` of the peak (which later steps keep)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


def fit(model: torch.nn.Module, schedule: dict, n_train: int, seed: int, name: str,
        loss_of: Callable[[list[int]], torch.Tensor], evaluate: Callable[[int, float], None]) -> None:
    """AdamW with lr_at's schedule over `schedule["steps"]` batches of training rows (indices into the train set);
    `evaluate(step, loss)` every `schedule["eval_every"]` steps and at the end."""
    opt = torch.optim.AdamW(model.parameters(), lr=schedule["lr"], betas=(0.9, 0.98), weight_decay=0.0)
    model.train()
    for step, (_, idx) in enumerate(batches(n_train, schedule["batch_size"], seed, name)):
        if step == schedule["steps"]:
            break
        loss = loss_of(idx)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, schedule["steps"], schedule["lr"], schedule["warmup"],
                                schedule["final_lr_fraction"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done = step + 1
        if done % schedule["eval_every"] == 0 or done == schedule["steps"]:
            evaluate(done, loss.item())


def llama_config(tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    h = POLICY["hidden_size"]
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=h,
        intermediate_size=4 * h,
        num_hidden_layers=POLICY["num_layers"],
        num_attention_heads=POLICY["num_heads"],
        num_key_value_heads=POLICY["num_heads"],
        max_position_embeddings=MAX_LEN,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )


def encode(
    tokenizer: PreTrainedTokenizerFast, prompts: list[str], answers: list[str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded prompt + answer + eos ids, the attention mask, and labels on the answer and eos only."""
    seqs, starts = [], []
    for p, a in zip(prompts, answers):
        prompt_ids = tokenizer(p).input_ids
        seqs.append(prompt_ids + tokenizer(a).input_ids + [tokenizer.eos_token_id])
        starts.append(len(prompt_ids))
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, (s, start) in enumerate(zip(seqs, starts)):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        labels[i, start : len(s)] = ids[i, start : len(s)]
    return ids, mask, labels


def batches(n_rows: int, batch_size: int, seed: int, tag: str) -> Iterator[tuple[int, list[int]]]:
    """(epoch, row indices) forever: a fixed shuffle per epoch, the last partial batch dropped."""
    epoch = 0
    while True:
        order = list(range(n_rows))
        random.Random(f"{seed}-{tag}-{epoch}").shuffle(order)
        for start in range(0, n_rows - batch_size + 1, batch_size):
            yield epoch, order[start : start + batch_size]
        epoch += 1


def train_policy(
    tokenizer: PreTrainedTokenizerFast,
    train: list[dict],
    test: list[dict],
    *,
    seed: int = SEED,
    extra_steps: int = 0,
    log: Callable[[str], None] = print,
) -> tuple[LlamaForCausalLM, list[tuple[int, float]]]:
    """SFT on the noisy teacher's answers; returns the model after SFT["steps"] and the held-out accuracy curve.

    With `extra_steps`, training goes on that many steps more (same data, same final learning rate) on a copy,
    only to measure whether the curve has flattened; the returned model is still the one after SFT["steps"].
    """
    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(tokenizer))
    opt = torch.optim.AdamW(model.parameters(), lr=SFT["lr"], betas=(0.9, 0.98), weight_decay=0.0)
    curve: list[tuple[int, float]] = []
    shipped: LlamaForCausalLM | None = None
    total = SFT["steps"] + extra_steps
    answers: dict[int, list[str]] = {}
    model.train()
    for step, (epoch, idx) in enumerate(batches(len(train), SFT["batch_size"], seed, "sft")):
        if step == total:
            break
        if epoch not in answers:
            answers = {epoch: noisy_answers(train, epoch, seed)}
        ids, mask, labels = encode(tokenizer, [train[i]["input"] for i in idx], [answers[epoch][i] for i in idx])
        for group in opt.param_groups:
            group["lr"] = lr_at(step, SFT["steps"], SFT["lr"], SFT["warmup"], SFT["final_lr_fraction"])
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done = step + 1
        if done % SFT["eval_every"] == 0 or done in (SFT["steps"], total):
            acc = greedy_accuracy(model, tokenizer, test)
            curve.append((done, acc))
            log(f"  sft step {done:5d}  epoch {epoch:3d}  loss {loss.item():.3f}  held-out accuracy {acc:.1%}")
        if done == SFT["steps"]:
            shipped = _copy(model, LlamaForCausalLM) if extra_steps else model
            if extra_steps:
                log(f"  -- the shipped policy is the one above; {extra_steps} more steps only to check the plateau --")
    assert shipped is not None
    return shipped, curve


def _copy(model: torch.nn.Module, cls: type) -> torch.nn.Module:
    clone = cls(model.config)
    clone.load_state_dict(model.state_dict())
    return clone


def reward_model_from(policy: LlamaForCausalLM, seed: int) -> LlamaForSequenceClassification:
    """A sequence classifier with the policy's backbone and a fresh one-output head (the RLHF convention)."""
    config = LlamaConfig.from_dict(policy.config.to_dict())
    config.num_labels = 1
    config.architectures = None
    torch.manual_seed(seed)
    rm = LlamaForSequenceClassification(config)
    rm.model.load_state_dict(policy.model.state_dict())
    return rm


def rm_scores(rm: LlamaForSequenceClassification, tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> torch.Tensor:
    """One score per "prompt+answer" text, read at the eos appended to it (as serve-rm reads it)."""
    ids, mask, _ = encode(tokenizer, texts, [""] * len(texts))
    return rm(input_ids=ids, attention_mask=mask).logits.squeeze(-1)


def rm_pairs(rows: list[dict], rng: random.Random) -> tuple[list[str], list[str]]:
    """A (correct, wrong) pair of full texts per row."""
    chosen = [r["input"] + r["answer"] for r in rows]
    rejected = [r["input"] + wrong_answer(r["input"], r["answer"], rng) for r in rows]
    return chosen, rejected


@torch.no_grad()
def pairwise_accuracy(
    rm: LlamaForSequenceClassification, tokenizer: PreTrainedTokenizerFast, rows: list[dict], seed: int, k: int = 4
) -> dict[str, float]:
    """How often the correct answer scores above a wrong one: `k` wrong answers per row, and separately the
    hardest case, the forgotten carry, on the rows that need one."""
    was_training = rm.training
    rm.eval()
    rng = random.Random(f"{seed}-rm-eval")
    wins = []
    for _ in range(k):
        chosen, rejected = rm_pairs(rows, rng)
        wins += (rm_scores(rm, tokenizer, chosen) > rm_scores(rm, tokenizer, rejected)).tolist()
    carry_rows = [r for r in rows if needs_carry(r["input"])]
    good = rm_scores(rm, tokenizer, [r["input"] + r["answer"] for r in carry_rows])
    bad = rm_scores(rm, tokenizer, [r["input"] + forgot_carry(r["input"]) for r in carry_rows])
    rm.train(was_training)
    return {"any_wrong": sum(wins) / len(wins), "forgot_carry": float((good > bad).float().mean())}


def train_reward_model(
    tokenizer: PreTrainedTokenizerFast,
    policy: LlamaForCausalLM,
    train: list[dict],
    test: list[dict],
    *,
    seed: int = SEED,
    log: Callable[[str], None] = print,
) -> tuple[LlamaForSequenceClassification, dict[str, float]]:
    """Pairwise loss -log sigmoid(r(correct) - r(wrong)) on fresh wrong answers each step; returns the model and
    its held-out pairwise accuracy."""
    rm = reward_model_from(policy, seed)
    rng = random.Random(f"{seed}-rm-pairs")

    def loss_of(idx: list[int]) -> torch.Tensor:
        chosen, rejected = rm_pairs([train[i] for i in idx], rng)
        scores = rm_scores(rm, tokenizer, chosen + rejected)
        return -F.logsigmoid(scores[: len(idx)] - scores[len(idx) :]).mean()

    def evaluate(done: int, loss: float) -> None:
        acc = pairwise_accuracy(rm, tokenizer, test, seed)
        log(f"  rm step {done:5d}  loss {loss:.3f}  held-out pairwise accuracy {acc['any_wrong']:.1%} "
            f"(forgotten carry: {acc['forgot_carry']:.1%})")

    fit(rm, RM, len(train), seed, "rm", loss_of, evaluate)
    set_normalisation(rm, tokenizer, test, seed)
    return rm, pairwise_accuracy(rm, tokenizer, test, seed)


@torch.no_grad()
def set_normalisation(
    rm: LlamaForSequenceClassification, tokenizer: PreTrainedTokenizerFast, rows: list[dict], seed: int
) -> None:
    """Write OpenRLHF's reward-model fields into the config: mean and std of the scores of held-out correct and
    wrong answers (used only with --normalize-reward, which is off here), and the head's name."""
    rm.eval()
    chosen, rejected = rm_pairs(rows, random.Random(f"{seed}-rm-norm"))
    scores = rm_scores(rm, tokenizer, chosen + rejected)
    rm.config.normalize_reward = False
    rm.config.mean = round(float(scores.mean()), 6)
    rm.config.std = round(float(scores.std()), 6)
    rm.config.value_head_prefix = "score"


# ------------------------------------------------------------------------------------------------ judge
def judge_texts(rows: list[dict], rng: random.Random, reference: bool = False) -> tuple[list[str], list[int]]:
    """Half right, half wrong "prompt+answer=" texts (judge_template.jinja's rendering) and their verdicts (1/0);
    with `reference`, "prompt+answer=label=" (judge_reference_template.jinja's)."""
    texts, verdicts = [], []
    for i, r in enumerate(rows):
        right = i % 2 == 0
        answer = r["answer"] if right else wrong_answer(r["input"], r["answer"], rng)
        texts.append(r["input"] + answer + "=" + (r["answer"] + "=" if reference else ""))
        verdicts.append(int(right))
    return texts, verdicts


def judge_logits(judge: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> torch.Tensor:
    """Next-token logits after each text, [N, vocab], read at its last token (right padding)."""
    rows = [tokenizer(t).input_ids for t in texts]  # as serve-rm --judge-model tokenises the rendered prompt
    width = max(map(len, rows))
    ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    last = mask.sum(dim=1) - 1
    return judge(input_ids=ids, attention_mask=mask).logits[torch.arange(len(texts)), last]


def verdict_ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    """The ids of the verdict tokens "0" (wrong) and "1" (right)."""
    return tokenizer.convert_tokens_to_ids(["0", "1"])


@torch.no_grad()
def judge_accuracy(judge: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, rows: list[dict], seed: int,
                   reference: bool = False) -> float:
    """How often P("1") > P("0") exactly when the answer is right, over right and wrong answers to `rows`."""
    was_training = judge.training
    judge.eval()
    texts, verdicts = judge_texts(rows + rows, random.Random(f"{seed}-judge-eval"), reference)
    verdict_logits = judge_logits(judge, tokenizer, texts)[:, verdict_ids(tokenizer)]
    hits = (verdict_logits.argmax(dim=1) == torch.tensor(verdicts)).float().mean()
    judge.train(was_training)
    return float(hits)


def train_judge(
    tokenizer: PreTrainedTokenizerFast,
    policy: LlamaForCausalLM,
    train: list[dict],
    test: list[dict],
    *,
    seed: int = SEED,
    log: Callable[[str], None] = print,
    reference: bool = False,
) -> tuple[LlamaForCausalLM, float]:
    """Cross-entropy on the verdict token after "prompt+answer=" (with `reference`: "prompt+answer=label="), from
    the policy's weights; returns the judge and its held-out verdict accuracy."""
    judge = _copy(policy, LlamaForCausalLM)
    rng = random.Random(f"{seed}-judge-pairs")

    def loss_of(idx: list[int]) -> torch.Tensor:
        texts, verdicts = judge_texts([train[i] for i in idx], rng, reference)
        # Over the whole vocabulary, so the judge also *writes* its verdict (serve-rm --judge-mode generate).
        targets = torch.tensor([verdict_ids(tokenizer)[v] for v in verdicts])
        return F.cross_entropy(judge_logits(judge, tokenizer, texts), targets)

    def evaluate(done: int, loss: float) -> None:
        log(f"  judge step {done:5d}  loss {loss:.3f}  held-out verdict accuracy "
            f"{judge_accuracy(judge, tokenizer, test, seed, reference):.1%}")

    fit(judge, JUDGE, len(train), seed, "judge", loss_of, evaluate)
    return judge, judge_accuracy(judge, tokenizer, test, seed, reference)


# ------------------------------------------------------------------------------------------------ saving
def save(model: torch.nn.Module, out_dir: Path) -> Path:
    """save_pretrained (safetensors) with a freshly built tokenizer: one used for batches carries padding state
    in its tokenizer.json, which would make the saved files depend on what the script did before saving."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer = build_char_tokenizer(ALPHABET)
    tokenizer.model_max_length = MAX_LEN
    tokenizer.save_pretrained(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=HERE, help="where policy/ and reward_model/ are written")
    parser.add_argument("--data-dir", type=Path, default=HERE, help="folder with train.jsonl and test.jsonl")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of the weights, the data order and the noise")
    parser.add_argument("--threads", type=int, default=1, help="torch threads; the same count reproduces the bytes")
    parser.add_argument("--check-plateau", type=int, default=0, metavar="STEPS",
                        help="after the shipped SFT steps, train this many more (not saved) and print the accuracy")
    parser.add_argument("--skip-reward-model", action="store_true", help="train and save the policy only")
    parser.add_argument("--judge", action="store_true",
                        help="only train the judge (judge/) from the shipped policy/ and save it")
    parser.add_argument("--judge-reference", action="store_true",
                        help="only train the judge that also reads the reference answer (judge_reference/)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    tokenizer = build_char_tokenizer(ALPHABET)
    train = read_jsonl(args.data_dir / "train.jsonl")
    test = read_jsonl(args.data_dir / "test.jsonl")
    print(f"threads {args.threads}, seed {args.seed}, {len(train)} train / {len(test)} held-out problems, "
          f"teacher forgets carries {NOISE:.0%} of the time")

    if args.judge or args.judge_reference:
        start = time.perf_counter()
        policy = LlamaForCausalLM.from_pretrained(HERE / "policy")
        judge, acc = train_judge(tokenizer, policy, train, test, seed=args.seed, reference=args.judge_reference)
        folder = args.out_dir / ("judge_reference" if args.judge_reference else "judge")
        save(judge, folder)
        print(f"judge: {time.perf_counter() - start:.0f}s, held-out verdict accuracy {acc:.1%} -> {folder}")
        return

    start = time.perf_counter()
    policy, curve = train_policy(tokenizer, train, test, seed=args.seed, extra_steps=args.check_plateau)
    n_params = sum(p.numel() for p in policy.parameters())
    save(policy, args.out_dir / "policy")
    print(f"policy: {n_params:,} parameters, {time.perf_counter() - start:.0f}s, "
          f"held-out accuracy {dict(curve)[SFT['steps']]:.1%} -> {args.out_dir / 'policy'}")
    if args.check_plateau:
        last = curve[-1]
        print(f"plateau check: {last[0] - SFT['steps']} more SFT steps move held-out accuracy by "
              f"{(last[1] - dict(curve)[SFT['steps']]) * 100:+.1f} points")

    if not args.skip_reward_model:
        start = time.perf_counter()
        rm, acc = train_reward_model(tokenizer, policy, train, test, seed=args.seed)
        save(rm, args.out_dir / "reward_model")
        print(f"reward model: {time.perf_counter() - start:.0f}s, held-out pairwise accuracy {acc['any_wrong']:.1%} "
              f"(forgotten carry {acc['forgot_carry']:.1%}) -> {args.out_dir / 'reward_model'}")


if __name__ == "__main__":
    main()
