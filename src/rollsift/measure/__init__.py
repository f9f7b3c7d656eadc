"""Measurement commands: compare runs, render reports, replay a ledger counterfactually, bench overheads."""
