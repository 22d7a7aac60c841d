"""`blend diff`: the records of a diff (`changes`), the section differ (`sections`) with rename
detection (`renames`), formulas and wording, the impact on a dump (`impact`, `slates`), the
estimated outcome from logs (`outcome`), git pairing (`git`), the command's entry (`report`) and
the renderings (`render`); `diff` re-exports the names of the former single module.
docs/architecture.md has the table."""
