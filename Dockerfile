# Two images from one file, built from the repository root (docs/containers.md has every command):
#
# Serving (onnxruntime, FastAPI, uvicorn; no torch), non-root, with a HEALTHCHECK on GET /health:
#   docker build --target serve -t tada-serve .
#   docker run --rm -p 8000:8000 -v "$PWD/models:/models:ro" tada-serve          # models/model.onnx mounted
#   docker build --target serve-bundled -t tada-serve:bundled .                   # or copied into the image
#   docker run --rm -p 8000:8000 -e TADA_MAX_IMAGES=64 tada-serve:bundled         # settings: TADA_* variables
#
# Training (the whole pipeline and the CLI); the default target:
#   docker build -t tada-train .
#   docker run --rm -v "$PWD:/work" --entrypoint dvc tada-train repro
#
# The base is Debian bookworm (Python 3.11, the project's version): `BASE` may name any image of it. Without a
# registry, make one from Debian's packages and tag it under this name (containers/build-base; podman shown):
#   containers/build-base     (mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm,
#                              without documentation, as the -slim images; imported as debian:bookworm-slim)
# Nothing environment-specific is baked in: a package index, its CA bundle or pip settings go in at build time as
# mounts (podman build -v /etc/pip.conf:/etc/pip.conf:ro ...; containers/build does it), never into a layer.
#
# Each target installs the project with the extra CI checks: serve runs `pip install ".[serve]"`, exactly what
# tests/test_serving_install.py installs into a fresh virtual environment before checking that torch is absent and
# that the service's predictions equal the PyTorch model's; train runs CI's `pip install ".[pipeline]"` (CI adds
# only the dev extra).

ARG BASE=debian:bookworm-slim

FROM ${BASE} AS python
# Debian's own python3 (3.11 in bookworm); a base that lacks it gets it from Debian's packages.
RUN if ! python3 -c "import ensurepip" 2>/dev/null; then \
      apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv ca-certificates && rm -rf /var/lib/apt/lists/*; \
    fi
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

FROM python AS source
WORKDIR /opt/tada
COPY pyproject.toml README.md ./
COPY tada ./tada

# --- serving -----------------------------------------------------------------------------------------------------
FROM source AS serve-build
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install ".[serve]" \
    && /opt/venv/bin/pip uninstall --yes pip setuptools  # nothing installs at run time: 25 MB less
# The serving image must never carry torch: fail the build if a dependency pulled it in.
RUN ! /opt/venv/bin/python -c "import torch" 2>/dev/null

FROM python AS serve
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    TADA_MODEL=/models/model.onnx TADA_HOST=0.0.0.0 TADA_PORT=8000
RUN useradd --create-home --uid 1000 --user-group tada
COPY --from=serve-build /opt/venv /opt/venv
USER tada
WORKDIR /home/tada
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('TADA_PORT', '8000') + '/health', timeout=4)"]
ENTRYPOINT ["tada", "serve"]

FROM serve AS serve-bundled
COPY --chown=tada:tada models/model.onnx /models/model.onnx

# --- training (last: the default target) -------------------------------------------------------------------------
FROM source AS train
ENV DVC_NO_ANALYTICS=1 GX_ANALYTICS_ENABLED=false PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH
# git for DVC; FriBiDi for Pillow's Raqm text layout, with which the default task's digits are rendered
# (tada.data.synthetic: without it Pillow would lay them out differently and the data would not be the same).
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends git libfribidi0 \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 1000 --user-group tada
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install ".[pipeline]"
USER tada
WORKDIR /work
ENTRYPOINT ["tada"]
CMD ["--help"]
