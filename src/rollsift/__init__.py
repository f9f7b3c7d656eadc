"""rollsift: spend RLVR rollouts only where they pay."""

__version__ = "0.1.0"
