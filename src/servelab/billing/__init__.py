"""Accounting: the rules (start kinds, init billing, rounding), the dated price catalog, and the
one pricing function every path uses (``servelab cost``, the analyzer, the report, the
executor, the simulator and the recommender). See docs/accounting.md and docs/cost.md."""
