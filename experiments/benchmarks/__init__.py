"""Speed benchmarks, as ratios measured side by side: ``python -m experiments.benchmarks.run_all [--quick]``."""
