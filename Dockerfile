# Two images from one file, built from the repository root.
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
# Each target installs the project with the extra CI checks: serve runs `pip install ".[serve]"`, exactly what
# tests/test_serving_install.py installs into a fresh virtual environment before checking that torch is absent and
# that the service's predictions equal the PyTorch model's; train runs CI's `pip install ".[pipeline]"` (CI adds
# only the dev extra).

FROM python:3.11-slim AS source
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/tada
COPY pyproject.toml README.md ./
COPY tada ./tada

# --- serving -----------------------------------------------------------------------------------------------------
FROM source AS serve-build
RUN python -m venv /opt/venv && /opt/venv/bin/pip install ".[serve]"
# The serving image must never carry torch: fail the build if a dependency pulled it in.
RUN ! /opt/venv/bin/python -c "import torch" 2>/dev/null

FROM python:3.11-slim AS serve
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    TADA_MODEL=/models/model.onnx TADA_HOST=0.0.0.0 TADA_PORT=8000
RUN useradd --create-home --uid 1000 tada
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
ENV DVC_NO_ANALYTICS=1 PYTHONUNBUFFERED=1
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 1000 tada
RUN pip install ".[pipeline]"
USER tada
WORKDIR /work
ENTRYPOINT ["tada"]
CMD ["--help"]
