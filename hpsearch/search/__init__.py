"""What hpsearch adds to Optuna's search: the default sampler and pruner for a study file that
names neither (`sampler: {type: auto}`, `pruner: {type: auto}`).

- `AutoSampler`: Optuna's GP sampler while the study is small (where GP is strongest on a few
  dozen trainings), through an in-memory mirror of the study that models conditional spaces
  too and holds other workers' running trials at believed values; multivariate TPE with
  `group` and `constant_liar` once the study grows large or the space has many dimensions.
- `AutoPruner`: a learning-curve pruner. A trial is compared with the finished ones at the same
  share of its own planned epochs (never step-for-step: runs of different lengths run different
  schedules), and stopped only when even an optimistic continuation, learnt from how the
  finished curves went on from that point, could not beat the best finished trial; before 3
  trials finished (a fleet's first round), when it trails the others at the same share.

Measured in benchmarks/search_quality.py and search_parallel.py; the figures and the reasons
are in docs/search.md.
Imports optuna and numpy only; Optuna's GP sampler imports torch when it first samples.
"""

from __future__ import annotations

from hpsearch.search.pruner import AutoPruner
from hpsearch.search.sampler import AutoSampler

__all__ = ["AutoPruner", "AutoSampler"]
