"""THE option schema of all four commands, one job per module:

- fields.py: the field helper and the metadata the CLI reads (flag names, positionals, secrets);
- groups.py, train_groups.py: the typed option groups, declarations only;
- commands.py: the four command configs, each composed of its groups, with typed slices (`cfg.slice(TrainArgs)`);
- rules.py: every cross-field check and every "this option does nothing here" warning;
- files.py: YAML in and out, precedence (flag > file > default) and error messages;
- verify_groups.py, verify_rules.py: the built-in verifiers' and code sandbox's options and checks;
- hub_ids.py: model options named by Hub ID -> local folders, once, at start;
- aliases.py: OpenRLHF's spellings of three vintages, one table; translation.py: how the table is applied.
"""

from rlhfctl.config.commands import (COMMANDS, BenchRMConfig, CheckRewardConfig, Command, ServeRMConfig,
                                     TrainPPOConfig)
from rlhfctl.config.fields import Group, field_extra, flag_name, is_positional, key_of
from rlhfctl.config.files import all_fields, dump_config, read_config_file, resolve
from rlhfctl.config.groups import (AuthArgs, BenchArgs, CheckArgs, CombinedRewardArgs, DataArgs, FunctionNameArgs,
                                   JudgeArgs, ListenArgs, ModelLoadArgs, OutputArgs, RemoteRewardArgs,
                                   RewardCacheArgs, RewardExecArgs, RewardFuncArgs, RewardModelArgs,
                                   RewardModelOptions, RolloutArgs, RunArgs, ServeBackendArgs, ServerArgs,
                                   ServerBatchArgs, VLLMEngineArgs)
from rlhfctl.config.train_groups import (AgentArgs, EMAArgs, EvalArgs, LoggingArgs, LoRAArgs, PlacementArgs,
                                         PolicyArgs, PPOArgs, PretrainArgs, PtxArgs, RewardSourceArgs, TrainArgs,
                                         VLLMArgs)
from rlhfctl.config.verify_groups import SandboxArgs, VerifierArgs

__all__ = [
    "COMMANDS", "AgentArgs", "AuthArgs", "BenchArgs", "BenchRMConfig", "CheckArgs", "CheckRewardConfig",
    "CombinedRewardArgs", "Command", "DataArgs", "EMAArgs", "EvalArgs", "FunctionNameArgs", "Group", "JudgeArgs",
    "ListenArgs", "LoRAArgs", "LoggingArgs", "ModelLoadArgs", "OutputArgs", "PPOArgs", "PlacementArgs", "PolicyArgs",
    "PretrainArgs", "PtxArgs",
    "RemoteRewardArgs", "RewardCacheArgs", "RewardExecArgs", "RewardFuncArgs", "RewardModelArgs",
    "RewardModelOptions", "RewardSourceArgs", "RolloutArgs", "RunArgs", "SandboxArgs", "ServeBackendArgs",
    "ServeRMConfig", "ServerArgs", "ServerBatchArgs", "TrainArgs", "TrainPPOConfig", "VLLMArgs", "VLLMEngineArgs",
    "VerifierArgs", "all_fields", "dump_config", "field_extra", "flag_name", "is_positional", "key_of",
    "read_config_file", "resolve",
]
