# One image for every toolbus role: `toolbus registry|worker|gateway --config FILE` (see
# compose.yaml and docs/deployment.md). `docker build -t toolbus .`
#
# Plain Dockerfile syntax (no `# syntax=` line, no heredocs, no RUN --mount): a `# syntax=` line
# makes BuildKit pull its frontend from Docker Hub, and Debian's Docker 20.10 builds this file
# with its classic builder, which knows neither heredocs nor mounts.
#
# The example components are built here, not at first start: a componentize-py build takes
# ~6 s and much memory per component, its output is portable Wasm keyed by content hash, and
# building it once per image means every container starts from the same artifact and a broken
# example fails `docker build`, not a worker in production. Compiling that Wasm to native code
# stays at first start (seconds, and specific to the CPU that runs it) and lands in the cache
# volume the workers share.

# Any Debian bookworm with python3 and its venv module on PATH as `python`: the public image by
# default; tests/deploy builds one from Debian's packages (harness/docker.py) where Docker Hub
# is out of reach.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 TOOLBUS_CACHE_DIR=/var/cache/toolbus
RUN python -m venv /opt/toolbus
WORKDIR /src
# Wheels pip may install from besides its index: none in the repo (deploy/wheels holds only its
# README); the test build puts the host's wheels here and sets PIP_NO_INDEX, having no index.
ARG PIP_NO_INDEX
COPY deploy/wheels/ /tmp/wheels/
# The dependencies first, in a layer of their own: a change to toolbus's sources reinstalls
# toolbus, not its ~60 dependencies.
COPY pyproject.toml README.md ./
RUN /opt/toolbus/bin/python -c 'import subprocess, sys, tomllib; project = tomllib.load(open("pyproject.toml", "rb")); build = project["build-system"]["requires"]; deps = project["project"]["dependencies"]; subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--find-links", "/tmp/wheels", *build, *deps], check=True)'
COPY bus/ bus/
COPY cli/ cli/
COPY gateway/ gateway/
COPY registry/ registry/
COPY schemas/ schemas/
COPY stores/ stores/
COPY workers/ workers/
RUN /opt/toolbus/bin/pip install -q --no-deps --no-build-isolation --find-links /tmp/wheels .

# The components the compose workers serve, built into the cache exactly as a worker would
# (same key: the project's files, the world, the componentize-py version), so it finds them.
# Only worker.toml before the build: an edit to another role's config keeps this layer.
COPY examples/ /app/examples/
COPY deploy/toolbus/worker.toml /app/deploy/toolbus/worker.toml
RUN cd / && /opt/toolbus/bin/python -c 'from pathlib import Path; from schemas.config import load_settings; from workers.sources import COMPONENT; settings = load_settings(Path("/app/deploy/toolbus/worker.toml")); [print("built", c.name, COMPONENT.resolve(c, settings.cache_dir)) for c in settings.components if c.kind == "component"]'
COPY deploy/toolbus/ /app/deploy/toolbus/

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/toolbus toolbus
COPY --from=build /opt/toolbus /opt/toolbus
COPY --from=build /app /app
COPY --from=build --chown=toolbus:toolbus /var/cache/toolbus /var/cache/toolbus
ENV PATH=/opt/toolbus/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TOOLBUS_CACHE_DIR=/var/cache/toolbus \
    TOOLBUS_STATE_DIR=/var/lib/toolbus
USER toolbus
WORKDIR /app
EXPOSE 3001
CMD ["toolbus", "--help"]
