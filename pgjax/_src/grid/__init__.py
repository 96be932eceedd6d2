r"""A resumable grid runner for gradient-estimator variance sweeps, and its command line.

:func:`run_grid` measures :func:`pgjax.sweep.gradient_stats` on every cell of the grid

.. math::

   \text{estimators} \times \text{problems} \times \text{sample sizes} \times \text{hyperparameter values},

and writes one row per cell to ``results.csv`` and ``results.json`` in an output folder, with the pgjax /
jax / jaxlib versions, the device kind and count and the PRNG key of the cell, so that every number in the
table can be reproduced.

How the work is organised:

* A **group** is one (estimator, problem, sample size). Sample sizes change array shapes, so each group is
  compiled once. Within a group the *traced* hyperparameters (``sigma``, ``damping``, learning rates, a
  constant baseline value, ...) are stacked into arrays and the whole group is one
  ``jax.jit(jax.vmap(...))`` call: changing or adding values never recompiles, and the number of
  compilations of a grid is exactly the number of groups.
* **Common random numbers**: every cell of a problem and sample size uses the same key,
  ``fold_in(key, crc32(problem, num_samples))``, whatever the estimator and hyperparameters, so differences
  between estimators are paired comparisons (much less noisy than independent runs) and each cell's key is
  recorded.
* **Atomic, resumable output**: each finished cell is written to ``cells/<cell_id>.json`` through a
  temporary file and ``os.replace`` (with the permissions the umask gives any new file), so a killed run
  leaves only whole cells. On restart, finished cells are read back and not recomputed; a group is run only
  if one of its cells is missing, always with the same shapes, so a resumed table is bit-identical to an
  uninterrupted one and has no duplicate rows. ``results.csv`` / ``results.json`` are rewritten atomically
  from the cell files after every group. Cells of other grids in the same folder are never deleted. Ctrl-C
  stops at once (the group in flight is abandoned).
* **Devices and hosts**: each group's ``gradient_stats`` shards its seeds over all devices; after
  ``jax.distributed.initialize()`` every process runs the same grid and process 0 alone writes the files.
* **Validation first**: the whole grid (names, sample sizes, hyperparameter values, the output folder's
  writability, and a ``jax.eval_shape`` trace of every group, which surfaces trace-time errors such as a
  leave-one-out baseline with one sample) is checked before any computation starts; nothing already
  written is touched when it fails.

**The command line** ``python -m pgjax.sweep CONFIG [--quick] [--out DIR]`` (also ``python -m pgjax
CONFIG`` and the console script ``pgjax-sweep``) runs a grid described in a small TOML (Python >= 3.11, or
with ``tomli`` installed) or JSON file::

  num_seeds = 2000            # estimator calls per cell (required)
  sample_sizes = [2, 8, 32]   # N, one compilation each (required)
  seed = 0                    # root PRNG seed (default 0)
  out = "results/sweeps/demo" # output folder (default results/sweeps/<config name>)
  # chunk_size = 256          # seeds per chunk (default: gradient_stats chooses)

  [quick]                     # overrides for --quick (default: num_seeds <= 256); --quick also
  num_seeds = 200             # writes to <out>-quick unless --out is given

  [problems.quad]             # type: a problem constructor of pgjax.problems; other keys its kwargs
  type = "gaussian_quadratic"
  dim = 3

  [problems.mine]             # or your own: any function(**kwargs) returning a problem
  type = "mypackage.module:make_problem"

  [estimators.reinforce]      # type: score_function | pathwise | zeroth_order | "module:function"
  type = "score_function"
  baseline = "none"           # other keys: static keyword arguments of the factory

  [estimators.constant]
  type = "score_function"
  hyperparameters = { baseline = [0.0, 1.0, 3.0] }  # traced: one compilation for all values

A problem is an object with ``params`` and, as the estimators need them, ``f`` and ``dist_fn``
(score-function, pathwise), ``expectation`` (zeroth-order) and ``true_grad(params)`` (the target of bias,
MSE and cosine); :class:`pgjax.problems.Problem` has them all. A constructor that returns a tuple
contributes its first element with ``params``. An estimator ``type = "package.module:function"`` is any
factory ``function(problem, num_samples, **static, **hyperparameters) -> estimator``. For ``zeroth_order``
the objective is the problem's closed-form ``expectation`` and ``num_samples`` is the number of directions;
the reported bias includes the Gaussian-smoothing bias (the target is the true gradient of the problem).

The table and ``variance.png`` (total variance and mean squared error against the number of samples, one
line per estimator setting, exact zeros marked; see :func:`pgjax._src.grid.plot.variance_figure`) are
written to the output folder. Exit status: 0 done, 2 bad config (nothing computed), 130 interrupted (rerun
the same command to resume).

This package is a leaf of pgjax: it imports only ``pgjax._src`` modules, and nothing in ``pgjax._src``
outside it imports it.
"""

from pgjax._src.grid.runner import GridError
from pgjax._src.grid.runner import GridResult
from pgjax._src.grid.runner import run_grid

__all__ = ("GridError", "GridResult", "run_grid")
