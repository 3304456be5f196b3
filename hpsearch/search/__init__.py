"""hpsearch's own search defaults: the sampler and pruner a study file gets when it names none.

`AutoSampler` and `AutoPruner` are ordinary Optuna samplers and pruners (the study stays a plain
Optuna study); docs/search.md says what they do, why, and the benchmark figures behind them.
"""

from hpsearch.search.pruner import AutoPruner
from hpsearch.search.sampler import AutoSampler

__all__ = ["AutoPruner", "AutoSampler"]
