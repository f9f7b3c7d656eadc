"""Pre-rollout prompt selectors (see rollsift.config.SELECTORS for the registry)."""
