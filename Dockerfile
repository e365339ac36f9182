# syntax=docker/dockerfile:1
#
# hamrah-gateway image: two stages.
#   builder  installs the dependencies and the gateway wheel into a virtualenv at /opt/venv
#   runtime  python:3.11-slim plus that venv and a default config; no pip cache, no compilers,
#            no tests, runs as uid 10001
#
#   docker build -t hamrah-gateway .
#   docker run --rm -p 8080:8080 \
#     -e UPSTREAM_URL=http://app:3000 \
#     -e AUTH_VALIDATE_URL=https://api.example.com/api/auth/sessions/validate \
#     -v "$PWD/gateway.yaml:/etc/hamrah-gateway/gateway.yaml:ro" hamrah-gateway
#
# The same image also runs the demo services: `hamrah-gateway demo-frontend ...`, `demo-api ...`
# (see docker-compose.yml).

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# binutils for strip(1): the wheels' extension modules ship with symbols (uvloop alone is 13 MB
# of them). Only this stage has it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends binutils \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
WORKDIR /src

# Dependencies first, from pyproject.toml alone: this layer is reused until they change, so a
# code change rebuilds only the small wheel below. Their extension modules lose their symbols.
COPY pyproject.toml ./
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
 && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt \
 && find /opt/venv -name '*.so' -type f -exec strip --strip-unneeded {} +

# The package itself, as a wheel (the build backend runs in pip's isolated build env, which is
# thrown away), installed without touching the dependencies again; then the bundled config is
# validated, and pip and setuptools go: build tools the running gateway needs neither of.
COPY . .
RUN /opt/venv/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/dist . \
 && /opt/venv/bin/pip install --no-cache-dir --no-deps /tmp/dist/*.whl \
 && /opt/venv/bin/hamrah-gateway --check --config config/gateway.docker.yaml \
 && /opt/venv/bin/pip uninstall -y -q setuptools pip

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="hamrah-gateway" \
      org.opencontainers.image.description="Authenticating reverse proxy: validates the session cookie before a web app."

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin gateway

COPY --from=builder /opt/venv /opt/venv
# A default config, so the image runs without a mount; mount your own over it (read-only).
COPY config/gateway.docker.yaml /etc/hamrah-gateway/gateway.yaml

USER 10001:10001
WORKDIR /

# 8080: the gateway (listen). 9901: the admin listener (/healthz, /readyz, /metrics); keep it
# off the public network.
EXPOSE 8080 9901

# The gateway drains on SIGTERM (shutdown_grace, 10 s by default) and exits 0; give
# `docker stop` a longer timeout than shutdown_grace (compose: stop_grace_period).
STOPSIGNAL SIGTERM

# Liveness from the admin listener; the image has no curl, so Python's urllib does it.
# Assumes admin_listen on port 9901 (as in config/gateway.docker.yaml).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9901/healthz', timeout=2).status == 200 else 1)" || exit 1

ENTRYPOINT ["hamrah-gateway"]
CMD ["--config", "/etc/hamrah-gateway/gateway.yaml"]
