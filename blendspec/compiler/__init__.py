"""From a checked spec to something that runs.

``graph`` (the typed graph IR and its text/dot/json printing), ``compile`` (Spec → Graph; no torch),
``lower`` (Graph → ``BlendModule``, the torch ``nn.Module`` built from ``blendspec.ops``).
"""
