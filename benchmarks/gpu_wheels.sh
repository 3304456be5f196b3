#!/bin/sh
# Wheels of the Python packages hpsearch needs that the lent GPU machine lacks, into .whl/
# (ignored by git), for its Python 3.12 on x86-64, pinned to the versions of this checkout's
# .venv, which the tests ran with. That machine reaches no package registry, and already has
# torch, torchvision, numpy, scipy, scikit-learn, Pillow, PyYAML, tqdm, filelock, packaging and
# MarkupSafe (the device's KINDS.md). docs/batch-size.md, "Checking on a GPU", says how to use it.
set -eu
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PACKAGES="optuna alembic colorlog Mako SQLAlchemy pydantic pydantic_core annotated-types
typing-inspection typing_extensions"
# shellcheck disable=SC2086  # one word per package
PINS=$("$PY" -c 'import sys; from importlib.metadata import version
print(" ".join(f"{n}=={version(n)}" for n in sys.argv[1:]))' $PACKAGES)
rm -rf .whl
# shellcheck disable=SC2086
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d .whl $PINS
ls .whl
du -sh .whl
