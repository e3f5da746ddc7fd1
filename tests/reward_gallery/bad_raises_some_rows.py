"""Looks labels up in a table of single-digit answers: KeyError on the rows whose label has two digits."""

WORDS = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six", "7": "seven",
         "8": "eight", "9": "nine"}


def spelled(label):
    return WORDS[label]


def reward_func(queries, prompts, labels, **kwargs):
    return [float(q.endswith(spelled(label)) or q.endswith(label)) for q, label in zip(queries, labels)]
