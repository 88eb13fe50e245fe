"""Analysis of results: exact optima, metrics, theory, statistics, claims, figures and reports."""
