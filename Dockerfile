# syntax=docker/dockerfile:1
# One image for every toolbus role: `toolbus registry|worker|gateway --config FILE` (see
# compose.yaml and docs/deployment.md). `docker build -t toolbus .`
#
# The example components are built here, not at first start: a componentize-py build takes
# ~6 s and much memory per component, its output is portable Wasm keyed by content hash, and
# building it once per image means every container starts from the same artifact and a broken
# example fails `docker build`, not a worker in production. Compiling that Wasm to native code
# stays at first start (seconds, and specific to the CPU that runs it) and lands in the cache
# volume the workers share.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 TOOLBUS_CACHE_DIR=/var/cache/toolbus
RUN python -m venv /opt/toolbus
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bus/ bus/
COPY cli/ cli/
COPY gateway/ gateway/
COPY registry/ registry/
COPY schemas/ schemas/
COPY stores/ stores/
COPY workers/ workers/
RUN --mount=type=cache,target=/root/.cache/pip /opt/toolbus/bin/pip install .

# The components the compose workers serve, built into the cache exactly as a worker would
# (same key: the project's files, the world, the componentize-py version), so it finds them.
COPY examples/ /app/examples/
COPY deploy/toolbus/ /app/deploy/toolbus/
RUN cd / && /opt/toolbus/bin/python - <<'EOF'
from pathlib import Path

from schemas.config import load_settings
from workers.sources import COMPONENT

settings = load_settings(Path("/app/deploy/toolbus/worker.toml"))
for component in settings.components:
    if component.kind == "component":
        print("built", component.name, COMPONENT.resolve(component, settings.cache_dir))
EOF

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/toolbus toolbus
COPY --from=build /opt/toolbus /opt/toolbus
COPY --from=build /app /app
COPY --from=build --chown=toolbus:toolbus /var/cache/toolbus /var/cache/toolbus
ENV PATH=/opt/toolbus/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TOOLBUS_CACHE_DIR=/var/cache/toolbus \
    TOOLBUS_STATE_DIR=/var/lib/toolbus
USER toolbus
WORKDIR /app
EXPOSE 3001
CMD ["toolbus", "--help"]
