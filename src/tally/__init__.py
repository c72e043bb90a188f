"""Tally: a loyalty points ledger service."""

__version__ = "0.1.0"
