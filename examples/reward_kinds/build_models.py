"""Rebuild the two toy models of this folder (shipped, so the configs run as they are):

  count_rm/     a reward model with its own modelling code (config.json auto_map -> modeling_count.py), loaded
                as ArmoRM is: AutoModelForSequenceClassification + trust_remote_code, reward in the output's
                `score` field. Its score is the number of "x" in the text.
  pairwise_rm/  a pairwise comparison model (PairRM-style): the logit of P(A beats B) is the number of "x" in
                response A minus the number in response B, read from --pairwise-template's "[A] ... [B] ...".

Toys with known answers, for trying the options and smoke-testing a set-up; a real model ships its own code the
same way. Run from the repository root: python examples/reward_kinds/build_models.py
"""

from pathlib import Path

from rlhfctl.models.tiny_kinds import make_count_model

HERE = Path(__file__).parent

if __name__ == "__main__":
    print(make_count_model(HERE / "count_rm", count_char="x"))
    print(make_count_model(HERE / "pairwise_rm", count_char="x", pairwise=True))
