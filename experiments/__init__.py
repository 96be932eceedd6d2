"""pgjax experiments: one module per claim or figure, run from the repository root.

``python -m experiments.<name> [--quick] [--out results]`` runs one experiment;
``python -m experiments.reproduce [--quick]`` runs them all and writes ``results/summary.md``. The
package is not installed with pgjax (it is not part of the library).

On CPU with jaxlib 0.10.2 a jitted ``vmap`` of a training loop over many seeds can deadlock inside XLA's
concurrency-optimised scheduler; it is turned off here, before any experiment imports jax.
"""

import os

if "xla_cpu_enable_concurrency_optimized_scheduler" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_cpu_enable_concurrency_optimized_scheduler=false").strip()
