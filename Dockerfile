# Training image: the whole pipeline (DVC stages, CLI). Build from the repository root:
#   docker build -t tada-train .
#   docker run --rm -v "$PWD:/work" --entrypoint dvc tada-train repro
# It installs the project with the same `pip install` CI runs (minus the dev extra), so what CI tests is what the
# image gets. The serving image (onnxruntime only, no torch) is a separate target, added with the serving work.
FROM python:3.11-slim AS train

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DVC_NO_ANALYTICS=1 PYTHONUNBUFFERED=1
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 1000 tada
WORKDIR /opt/tada
COPY pyproject.toml README.md ./
COPY tada ./tada
RUN pip install ".[pipeline]"
USER tada
WORKDIR /work
ENTRYPOINT ["tada"]
CMD ["--help"]
