# One image for every MPPO Python service; the compose `command` picks which one runs
# (`python -m group_svc`, `python -m payment_svc`, ...).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Unprivileged user the services run as.
RUN groupadd --system --gid 10001 mppo \
 && useradd --system --uid 10001 --gid mppo --home-dir /app --shell /usr/sbin/nologin mppo

WORKDIR /app

# Project metadata first so the dependency layer is cached across code changes. The runtime
# dependencies (pinned in pyproject.toml, no dev extras) are installed from a stub package,
# then the real code replaces it.
COPY pyproject.toml ./
RUN mkdir -p mppo && touch mppo/__init__.py \
 && pip install . \
 && pip uninstall --yes mppo \
 && rm -rf mppo build ./*.egg-info

COPY mppo ./mppo
COPY group_svc ./group_svc
COPY payment_svc ./payment_svc
COPY order_svc ./order_svc
COPY notification_svc ./notification_svc
COPY gateway ./gateway
RUN pip install --no-deps . \
 && rm -rf build ./*.egg-info

USER mppo:mppo

# group, payment, order, notification (gRPC).
EXPOSE 50051 50052 50053 50054

CMD ["python", "-m", "group_svc"]
