"""The simulator: ``world`` (a synthetic world of users and items that writes candidate dumps and
answers with outcomes, for the sample, tests and on-policy evaluation)."""
