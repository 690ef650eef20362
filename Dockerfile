# syntax=docker/dockerfile:1
# image-updater: the daemon (`run`) and the one-shot commands (`promote`, `retag`).
#
# Built for Kubernetes with a read-only root filesystem: everything that writes (git clones,
# git's global config, ssh, temp files) goes to the cache volume at /var/cache/image-updater
# or to /tmp, both mounted as emptyDir volumes by deploy/base/deployment.yaml.
#
# No HEALTHCHECK: Kubernetes ignores Docker's HEALTHCHECK; the Deployment's liveness
# (/healthz) and readiness (/readyz) probes do that job, and the image carries no HTTP client.

ARG PYTHON_VERSION=3.11

# --- builder: a venv with the project and its runtime dependencies ------------------------
FROM python:${PYTHON_VERSION}-slim AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# .dockerignore admits only what the build needs: pyproject, README, the package, the lock.
COPY . .
# Same pins as scripts/setup.sh (-c requirements/test.lock), runtime dependencies only:
# no [test] extra in the image.
RUN pip install -c requirements/test.lock .

# --- runtime ---------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim
# git for the deploy repository, openssh-client for ssh:// and scp-like remotes (and SSH
# commit signatures), gnupg for OpenPGP commit signatures.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git openssh-client gnupg \
 && rm -rf /var/lib/apt/lists/*
# 65532 is the conventional "nonroot" uid/gid (as in distroless images); the Deployment
# sets the same ids so file ownership on volumes matches.
RUN groupadd --gid 65532 nonroot \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /var/cache/image-updater \
      --shell /usr/sbin/nologin nonroot \
 && install -d -o 65532 -g 65532 -m 0750 /var/cache/image-updater
COPY --from=builder /opt/venv /opt/venv
# HOME and GIT_CONFIG_GLOBAL point at the writable cache volume: git writes its global config
# (safe.directory, credentials helpers) and ssh its ~/.ssh there; the root fs stays read-only.
# Bytecode was compiled at install time, so Python never tries to write .pyc files.
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/var/cache/image-updater \
    GIT_CONFIG_GLOBAL=/var/cache/image-updater/gitconfig \
    IMAGE_UPDATER_CACHE_DIR=/var/cache/image-updater/repos \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
WORKDIR /var/cache/image-updater
VOLUME ["/var/cache/image-updater"]
EXPOSE 8080
ENTRYPOINT ["image-updater"]
CMD ["run"]
