# syntax=docker/dockerfile:1
#
# The one BitEx image. Every role is its command (ENTRYPOINT is `bitex`):
#   serve [--only commands|queries]               the gateways, both or one (HTTP)
#   worker accounts|matching [--instance N]       the write-side processors (metrics 9100)
#   worker projections                            the read models (metrics 9100)
#   migrate | topics | replay                     one-shot jobs
#
#   docker build -t bitex:local .
#   docker run --rm bitex:local --help
#
# Credentials (BITEX_MYSQL_PASSWORD, BITEX_API_KEY_MASTER, a Redis URL with a
# password) are never baked in: they come from the environment at run time
# (docker-compose.yml, or a Kubernetes Secret; see docs/operations.md).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- builder: a virtualenv with the dependencies, then BitEx itself -------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/bitex
WORKDIR /src

# Dependencies first, from pyproject.toml alone, so that a source change does not
# reinstall them. Every pinned dependency has a manylinux wheel for CPython 3.11
# (no compiler needed).
COPY pyproject.toml ./
RUN python -c "import tomllib; \
print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && /opt/bitex/bin/pip install --no-compile -r /tmp/requirements.txt

COPY README.md ./
COPY domain ./domain
COPY infra ./infra
COPY streams ./streams
COPY projections ./projections
COPY commands ./commands
COPY queries ./queries
# Compiled once here: at run time the root filesystem is read-only.
RUN /opt/bitex/bin/pip install --no-compile --no-deps . \
 && /opt/bitex/bin/python -m compileall -q -j 0 /opt/bitex/lib \
 && /opt/bitex/bin/bitex --help > /dev/null

# -- runtime: the virtualenv on a clean slim Python, as an unprivileged user ---------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="bitex" \
      org.opencontainers.image.description="BitEx: an event-sourced CQRS crypto exchange backend" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric uid/gid, so Kubernetes can check runAsNonRoot (runAsUser 10001).
RUN groupadd --system --gid 10001 bitex \
 && useradd --system --uid 10001 --gid bitex --no-create-home \
      --home-dir /var/lib/bitex --shell /usr/sbin/nologin bitex \
 && install -d -o bitex -g bitex -m 0750 /var/lib/bitex

COPY --from=builder /opt/bitex /opt/bitex

# BITEX_STATE_DIR holds Faust's (empty) table directory and nothing that must
# survive a restart (processor state lives in Kafka): mount an emptyDir or a tmpfs
# there when the root filesystem is read-only. In a container the servers listen
# on every interface.
ENV PATH=/opt/bitex/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BITEX_STATE_DIR=/var/lib/bitex \
    BITEX_HTTP_HOST=0.0.0.0 \
    BITEX_METRICS_PORT=9100

USER 10001:10001
WORKDIR /var/lib/bitex
EXPOSE 8000 8001 9100

ENTRYPOINT ["bitex"]
CMD ["--help"]
