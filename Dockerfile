# syntax=docker/dockerfile:1
#
# hamrah-gateway image: two stages.
#   builder  installs the runtime part of uv.lock and the gateway wheel into a virtualenv at
#            /opt/venv (hash-checked, the same versions as CI and ./quickstart)
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
    PYTHONDONTWRITEBYTECODE=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=python3 \
    UV_PROJECT_ENVIRONMENT=/opt/venv

# binutils for strip(1): the wheels' extension modules ship with symbols (uvloop alone is 13 MB
# of them). Only this stage has it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends binutils \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# uv, hash-checked from the same pin ./quickstart uses, in a venv of its own that the runtime
# stage never sees.
COPY requirements/uv.txt requirements/uv.txt
RUN python3 -m venv /opt/uv \
 && /opt/uv/bin/pip install -q --require-hashes --no-deps -r requirements/uv.txt

# The runtime part of uv.lock (no test or bench extras), every hash checked, never re-resolved
# (--frozen): the image runs the versions CI tested. From the lock and pyproject.toml alone, so
# this layer is reused until they change and a code change rebuilds only the small step below.
# Their extension modules lose their symbols.
COPY pyproject.toml uv.lock ./
RUN /opt/uv/bin/uv sync -q --frozen --no-install-project \
 && find /opt/venv -name '*.so' -type f -exec strip --strip-unneeded {} +

# The package itself, as a wheel (not editable: /src is not in the runtime stage), without
# touching the dependencies again; then the bundled config is validated.
COPY . .
RUN /opt/uv/bin/uv sync -q --frozen --no-editable \
 && /opt/venv/bin/hamrah-gateway --check --config config/gateway.docker.yaml

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
