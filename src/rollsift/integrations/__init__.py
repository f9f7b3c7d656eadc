"""Adapters that put rollsift's strategies into other training frameworks.

Each adapter lives in its own module, imports its framework only there, and pins the framework
versions it is tested with: ``rollsift.integrations.trl`` (TRL's ``GRPOTrainer``).
"""
