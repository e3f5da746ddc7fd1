"""rlhfctl: RLHF with the reward on a separate server. Serve, check, benchmark and train against rewards."""

__version__ = "0.1.0"
