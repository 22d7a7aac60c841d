"""Running a spec over a candidate dump: ``blend`` (the runner and the loop over requests),
``run`` (`blend run`: the local engine, writing slates, rejects and metrics), ``ray_engine`` (the
same loop over Ray Data), ``report`` (the HTML report), ``charts`` (what it shares with `blend
policy report --html`: Plotly charts, the page, tables), ``glossary`` (every printed measure,
defined: docs/metrics.md and the reports' glossary)."""
