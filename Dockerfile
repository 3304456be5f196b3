# syntax=docker/dockerfile:1
#
# The hpsearch image: one image, three roles, chosen by the arguments after the image name:
#   docker run --gpus all hpsearch:0.1.0 run /studies/study.yaml --artifacts /artifacts
#   docker run hpsearch:0.1.0 dashboard /studies/study.yaml --host 0.0.0.0 --read-only
#   docker run hpsearch:0.1.0 storage-proxy --port 13000
#
# Build from the repository root:       docker build -t hpsearch:0.1.0 .
# A much smaller CPU-only image (no CUDA libraries):
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu \
#     -t hpsearch:0.1.0-cpu .
#
# No secret is built in: the database password reaches a container at run time, in
# HPSEARCH_DB_PASSWORD (docs/deployment.md).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a virtual environment in /opt/hpsearch; nothing here needs a compiler -------------
FROM ${PYTHON_IMAGE} AS build
# The PyTorch index of the CUDA build: the torch wheel carries its CUDA libraries, so the image
# needs no CUDA base, only an NVIDIA driver on the host (CUDA 13.0 wheels: driver 580 or newer).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/hpsearch
ENV PATH=/opt/hpsearch/bin:$PATH
# torch first, alone: the largest layer, rebuilt only when these pins change. Keep the pins equal
# to the ones tests/test_deploy.py checks against pyproject.toml.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" torch==2.14.1 torchvision==0.29.1
WORKDIR /src
# Only what the wheel is built from (.dockerignore allows nothing else into the context).
COPY pyproject.toml ./
COPY hpsearch ./hpsearch
# The project's own pins (optuna==5.0.*, optuna-dashboard==0.21.*, ...) come from pyproject.toml;
# torch and torchvision are already satisfied by the step above.
RUN pip install --no-cache-dir .

# --- runtime: the same base, the virtual environment, a non-root user ------------------------
FROM ${PYTHON_IMAGE}
RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin hpsearch \
    && install -d -o hpsearch -g hpsearch /artifacts
COPY --from=build /opt/hpsearch /opt/hpsearch
# NVIDIA_VISIBLE_DEVICES=void: the image itself claims no GPU. `docker run --gpus`, Compose's
# device reservations and the Kubernetes device plugin each set the variable for the container
# they start, which overrides this; the dashboard and the proxy (no GPU asked) then see none, even
# on nodes where the NVIDIA runtime is the default. The capabilities are what CUDA (compute) and
# nvidia-smi/NVML (utility, used by `hpsearch run --gpus all`) need.
ENV PATH=/opt/hpsearch/bin:$PATH \
    PYTHONUNBUFFERED=1 \
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
ENTRYPOINT ["hpsearch"]
CMD ["--help"]
