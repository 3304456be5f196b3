"""Your own training loop, tuned by hpsearch: callbacks for PyTorch Lightning and the Hugging Face
Trainer that report each evaluation to the trial (docs/own-training-loop.md).

`lightning` (`LightningReporter`) and `huggingface` (`HuggingFaceReporter`), one module per
framework, each importing its framework, so that importing one never needs the other:

    from hpsearch.integrations.lightning import LightningReporter
    from hpsearch.integrations.huggingface import HuggingFaceReporter

Both take the `report` a `function:` objective is given. When the pruner stops the trial they
stop the training as after its last epoch (the trainer saves its checkpoint, closes its loggers,
returns), and the trial still ends PRUNED; when the training ends they name its checkpoint
(`report.keep_checkpoint`), which `hpsearch best` shows.
"""

from __future__ import annotations

from hpsearch.integrations.common import numeric_metrics, require

__all__ = ["numeric_metrics", "require"]
