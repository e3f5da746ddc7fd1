"""Reward sources behind one interface (see base.py)."""
