"""Every attribute key hpsearch writes on a study or its trials: who writes it, who reads it.

Plain strings, stored by Optuna as they are, so optuna-dashboard, `optuna` and a user's own code
read them unchanged; a key renamed here is a key that studies written earlier no longer show.
hpsearch's own keys start with `hpsearch:` where a user's objective could pick the same name.

Not here, for a reason: `hpsearch:total_steps` (`search.curves.TOTAL_STEPS_ATTR`, a trial's
planned steps, written by a user's objective, read by the default sampler and pruner), because
`search` imports nothing of hpsearch; and a trial's `<metric>@<step>` attributes (written by
`objective.trial` for every metric beyond the one reported to the pruner, read by
`inspect.source.curve`).
"""

from __future__ import annotations

# Optuna's own key on a retry: the numbers of the trials it retries (see below). Defined in
# `budget.rules`, a layer below, which counts a retry as no new trial; named here too.
from hpsearch.budget.rules import RETRY_HISTORY as RETRY_HISTORY

# --- trial user attributes -----------------------------------------------------------------

# The worker that ran the trial (`host:pid#n`). Written by the worker loop when the trial
# starts; read by `worker.retry_policy` (which worker crashed), the storage's fail message,
# `inspect` (status, best, export).
WORKER_ATTR = "worker"
# Provenance, written with the worker by `worker.provenance`: the machine's host name (read by
# `worker.stopping`, which refuses a SQLite study shared across hosts, and `inspect.fetch`), the
# versions of hpsearch, Optuna, torch and CUDA (read by `hpsearch doctor`), the git commit of
# the study file's checkout. `inspect.source` keeps all three out of the parameters it shows.
HOST_ATTR = "host"
VERSIONS_ATTR = "versions"
GIT_COMMIT_ATTR = "git_commit"
# True on a trial the study file's `enqueue:` queued. Written by `study.create`; read by
# `inspect.source` (provenance, not a parameter).
ENQUEUED_ATTR = "enqueued"
# The built-in trainer's choices, written by `objective.trainer` before it trains: the seed
# (read back by a retry, so it trains the same), the planned epochs (read by `search.curves`
# as a literal, by `inspect` status and advise and `hpsearch run`'s progress bar), the batch
# size and, when it is split, the micro-batch size, the accumulation steps and the device.
SEED_ATTR = "seed"
EPOCHS_ATTR = "epochs"
BATCH_SIZE_ATTR = "batch_size"
MICRO_BATCH_SIZE_ATTR = "micro_batch_size"
ACCUMULATION_STEPS_ATTR = "accumulation_steps"
DEVICE_ATTR = "device"
# The epochs the trainer ran (fewer when it stopped early). Written by `objective.trainer`
# after training; read by `inspect` status and export.
EPOCHS_RUN_ATTR = "epochs_run"
# Where the trial's checkpoint is kept: a path on its machine, or an artifact id in the shared
# store. Written by `objective.trainer` (`objective.checkpoints` decides which trials keep
# one); read by `objective.checkpoints` (what to remove), `inspect` status, best and fetch.
CHECKPOINT_ATTR = "checkpoint"
# Why a trial failed, in one line. Written by `objective.trial` (the objective's exception),
# `objective.trainer` (`oom: ...`), the worker loop and `worker.retry_policy` (a stopped or
# crashed worker), `storage.fates` (missed heartbeats); read by `worker.stopping` (failures
# in a row), `worker.retry_policy`, `inspect` advise and export.
FAIL_REASON_ATTR = "fail_reason"
# Why a trial was pruned (the metric and step, `budget.epochs spent`, the study stopped).
# Written by `objective.trial` and the worker loop; read by `inspect.export`.
PRUNE_REASON_ATTR = "prune_reason"
# The workers a trial crashed, and the step it was at each time. Written and read by
# `worker.retry_policy` on the retry: a trial that crashes two workers at the same step is not
# retried again.
CRASHED_WORKERS_ATTR = "crashed_workers"
CRASH_STEPS_ATTR = "crash_steps"
# Every metric the objective reported beside the study's, per step:
# `{"step": [1, 2], "val_loss": [0.9, 0.7], ...}`. Written when the trial ends by
# `objective.trial` (`study.metrics.MetricLog`, which also writes each metric's final value
# under the metric's own name); read by `inspect.export` (`curve_<metric>` columns).
CURVES_ATTR = "hpsearch:curves"

# --- trial system attributes ---------------------------------------------------------------

# Why a trial failed because of its worker (`crash`: it stopped sending heartbeats; `stop`: a
# signal), not because of its own code: the mark that it is to be retried. Written by
# `storage.fates` in the transaction that fails the trial; read by `storage.fates`,
# `worker.retry_policy` and `worker.stopping` (such failures do not count against the study).
RETRY_ATTR = "hpsearch:retry"
# Optuna's own attributes on a retry (as its `RetryFailedTrialCallback` writes them): the
# numbers of the trials it retries, and the first of them. Written by `worker.retry_policy`;
# read by it, `storage.fates` (one retry per trial), `budget.rules` and `inspect` status and
# export. (`RETRY_HISTORY` is imported at the top.)
FAILED_TRIAL_ATTR = "failed_trial"

# --- study system attributes (written by `study.create` and `study.join`) ------------------

# The study file as stored: read by every joining worker (`study.join`), rewritten by a budget
# change.
SPEC_ATTR = "hpsearch:spec"
# The search space as Optuna distributions (read by `inspect.source` to show the user's names).
SPACE_ATTR = "hpsearch:search_space"
# Set last when the study is created: a worker joining meanwhile waits for it.
READY_ATTR = "hpsearch:ready"
# The study's uid: keys its budget ledger row, so a deleted study's row is never inherited.
UID_ATTR = "hpsearch:uid"
# Every budget change a `hpsearch run --n-trials/--timeout` made, for people (the dashboard).
BUDGET_CHANGES_ATTR = "hpsearch:budget_changes"
# {at, by, reason, kind}: `hpsearch stop`, or the target reached. Written and read by
# `worker.stopping`: every worker checks it between trials.
STOP_ATTR = "hpsearch:stopped"
# `hpsearch:batch_size:<key>`: the study-wide batch-size limit of one model, input and device,
# shared by every worker. Written and read by `objective.trainer` (`StudyLimits`).
BATCH_SIZE_LIMIT_PREFIX = "hpsearch:batch_size:"
# How the study stores its power-of-two parameters (`study.powers`): "value-only" (the value
# under the parameter's own name, which the sampler searches as its exponent); "value" (the
# exponent `log2_<name>` sampled, the value beside it: studies of December 2026); absent on a
# study an older hpsearch made: the exponent only. Written by `study.create`; read by
# `study.create` (a joiner), `objective.trial` and `inspect.source`.
POWER_OF_TWO_ATTR = "hpsearch:power_of_two"
