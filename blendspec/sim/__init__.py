"""The simulator: a synthetic world of users and items that writes candidate dumps and answers
slates with outcomes, for the sample, tests and on-policy evaluation. ``segments`` (configuration),
``items`` (tables), ``candidates`` (requests), ``chain`` (responses), ``columns`` (the dump
format), ``core`` (the ``World``), ``dumps`` and ``shards`` (writing); ``world`` hands out all of
their names under the former path."""
