# syntax=docker/dockerfile:1
# balance-worker image: one image for every role (migrate, worker, beat, flower);
# the role is the command (see docker-compose.yml and Procfile).

# --- build: install the package and its runtime dependencies into a venv ----------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"

WORKDIR /src
# Only what the package build needs (pyproject's readme + the two packages); no tests,
# no dev extra: `pip install .` installs the runtime dependencies only.
COPY pyproject.toml README.md ./
COPY config ./config
COPY worker ./worker
RUN pip install . \
 && cd / \
 && python -c "import worker, config; from importlib.metadata import entry_points; \
assert entry_points(group='console_scripts', name='balancectl')"

# --- runtime: the venv, a non-root user, no build context -------------------------------
FROM python:3.11-slim AS runtime

LABEL org.opencontainers.image.title="balance-worker" \
      org.opencontainers.image.description="Prepaid-balance Celery worker fleet"

ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONFAULTHANDLER=1 \
    BALANCE_HOME=/app/.balance

RUN groupadd --system --gid 10001 balance \
 && useradd --system --uid 10001 --gid balance --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin balance \
 && install -d -o balance -g balance -m 0750 /app /app/.balance

COPY --from=build /opt/venv /opt/venv

WORKDIR /app
USER balance:balance

# The default role; docker-compose.yml / Procfile choose the role per service.
CMD ["celery", "-A", "worker", "worker", "--loglevel=INFO"]
