"""How a study stores its power-of-two parameters (`type: power_of_two`).

Optuna has no "power of two" distribution, and a categorical list may not change between
workers (each GPU's own `high: auto`). So the sampler sees the integer exponent,
`log2_<name>` (16-128 is `IntDistribution(4, 7)`), and every sampler models the parameter on
the log2 scale with each power of two one step. Beside it the trial stores the value a person
means under the parameter's own name (`batch_size: 32`), as a one-value distribution that no
sampler samples or models: optuna-dashboard, the `optuna` CLI, `study.best_params` and the
report's plots show the batch size.

(Suggesting the value itself, `IntDistribution(16, 128, log=True)`, with each proposal rounded
to a power of two, was measured worse: GP and TPE then model every integer between the powers,
propose points that round to configurations already tried, and hpsearch's default search lost
most of its lead on LCBench; see the search-quality figures in the issue note.)

Studies made before the value was stored keep only the exponent (`uses_exponents`): adding a
parameter to their trials would make their search space look conditional to the sampler.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna

from hpsearch.storage.attrs import POWER_OF_TWO_ATTR, SPACE_ATTR
from hpsearch.study.join import read_attr

# `POWER_OF_TWO_ATTR`'s values: "value" (the exponent and the value beside it) or "exponent"
# (`log2_batch_size` only: studies made before the attribute existed).
ENCODING_ATTR = POWER_OF_TWO_ATTR
VALUE, EXPONENT = "value", "exponent"


def uses_exponents(study: optuna.Study) -> bool:
    """Whether the study stores powers of two as `log2_<name>` exponents only (an older study)."""
    encoding = read_attr(study, ENCODING_ATTR)
    made_by_hpsearch = encoding is not None or read_attr(study, SPACE_ATTR) is not None
    return stored_as_exponents({ENCODING_ATTR: encoding, SPACE_ATTR: made_by_hpsearch or None})


def stored_as_exponents(attrs: Mapping[str, Any]) -> bool:
    """`uses_exponents`, from the study's attributes already read (user and system merged)."""
    encoding = attrs.get(ENCODING_ATTR)
    # A study hpsearch made before the attribute existed stored exponents only; one made by
    # Optuna itself (the benchmarks, a user's own) gets the values too.
    return encoding == EXPONENT or (encoding is None and attrs.get(SPACE_ATTR) is not None)
