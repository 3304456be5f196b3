# syntax=docker/dockerfile:1
#
# The hpsearch image: one image, three roles, chosen by the arguments after the image name:
#   docker run --gpus all hpsearch:0.1.0 run /studies/study.yaml --gpus all --artifacts /artifacts
#   docker run hpsearch:0.1.0 dashboard /studies/study.yaml --host 0.0.0.0 --read-only
#   docker run hpsearch:0.1.0 storage-proxy --host 0.0.0.0 --port 13000
#
# Build from the repository root:       docker build -t hpsearch:0.1.0 .
# The CPU-only variant (no CUDA libraries; laptops and CI):
#   docker build --build-arg TORCH=cpu -t hpsearch:0.1.0-cpu .
#
# Layers, largest and most stable first, so that a code edit rebuilds and ships only the last
# one (megabytes): the base, the user and an empty virtual environment, torch (with its CUDA
# libraries: gigabytes, changes with deploy/image/torch-*.txt only), the other dependencies
# (deploy/image/requirements.txt), then hpsearch itself. Every package is pinned with its
# sha256 in those lock files (deploy/image/lock.sh writes them), and installed with --no-deps,
# so the image holds exactly what they list; `pip check` proves nothing is missing.
#
# No secret is built in: the database password reaches a container at run time, in
# HPSEARCH_DB_PASSWORD (docs/deployment.md).

# The base, by tag; where a registry is reachable, pin it by digest:
#   --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:...   (docs/deployment.md)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- wheel: hpsearch as a wheel; the build tools stay in this stage ---------------------------
FROM ${PYTHON_IMAGE} AS wheel
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# Only what the wheel is built from (.dockerignore allows little else into the context).
COPY pyproject.toml ./
COPY hpsearch ./hpsearch
RUN python -m venv /opt/build \
    && /opt/build/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# --- runtime: the virtual environment in /opt/hpsearch, a non-root user ----------------------
FROM ${PYTHON_IMAGE}
# cu130: PyPI's torch, which carries its CUDA 13.0 libraries (the host needs an NVIDIA driver,
# 580 or newer, not a CUDA base image); cpu: PyTorch's CPU-only build, a fraction of the size.
ARG TORCH=cu130
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/hpsearch/bin:$PATH
RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin hpsearch \
    && install -d -o hpsearch -g hpsearch /artifacts \
    && python -m venv /opt/hpsearch
# torch first, alone: the largest layer, rebuilt only when its lock changes.
COPY deploy/image/torch-${TORCH}.txt /opt/hpsearch/locks/
RUN pip install --no-cache-dir --no-deps -r /opt/hpsearch/locks/torch-${TORCH}.txt
# Everything else hpsearch depends on (optuna, optuna-dashboard, SQLAlchemy, the drivers, boto3
# for S3 checkpoints, ...), exactly as locked.
COPY deploy/image/requirements.txt /opt/hpsearch/locks/
RUN pip install --no-cache-dir --no-deps --require-hashes -r /opt/hpsearch/locks/requirements.txt
# hpsearch last: the only layer a code change rebuilds.
COPY --from=wheel /wheels /opt/hpsearch/wheels
RUN pip install --no-cache-dir --no-deps /opt/hpsearch/wheels/hpsearch-*.whl \
    && pip check
# NVIDIA_VISIBLE_DEVICES=void: the image itself claims no GPU. `docker run --gpus`, Compose's
# device reservations and the Kubernetes device plugin each set the variable for the container
# they start, which overrides this; the dashboard and the proxy (no GPU asked) then see none, even
# on nodes where the NVIDIA runtime is the default. The capabilities are what CUDA (compute) and
# nvidia-smi/NVML (utility, used by `hpsearch run --gpus all`) need.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NVIDIA_VISIBLE_DEVICES=void \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
# Numeric, so that Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
USER 10001:10001
WORKDIR /home/hpsearch
# The dashboard's and the storage proxy's ports, when they are the command.
EXPOSE 8080 13000
# No HEALTHCHECK: one image plays three roles with different probes (a worker serves no port; its
# liveness is its heartbeat in the database). Compose and Kubernetes define one per service.
HEALTHCHECK NONE
# dumb-init as PID 1 (from the locks, deploy/image/pins.in): it reaps the orphaned children of a
# trial's processes (a command objective's, the DataLoader's), which hpsearch as PID 1 would
# leave as zombies, and passes SIGTERM on to hpsearch. --single-child: to hpsearch alone, which
# hands it to each of its own processes (`--gpus all`); a signal to the whole process group would
# reach them twice, and a second signal means "exit now". Compose's `init: true` and
# `docker run --init` add their own init in front, which is harmless.
ENTRYPOINT ["dumb-init", "--single-child", "--", "hpsearch"]
CMD ["--help"]
