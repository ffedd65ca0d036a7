# splatcast GPU image: CUDA runtime + cuDNN, the GPU extras (onnxruntime-gpu, TensorRT) and the CUDA build of
# torch for the `torch` render backend. Build:  docker build -t splatcast .
# Run:    docker run --gpus all -p 8080:8080 splatcast
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/splatcast \
    PATH=/opt/splatcast/bin:$PATH

# Debian/Ubuntu package versions move with the base image's security updates: pin the base, not each package.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY realtime ./realtime
COPY engines ./engines
COPY export ./export
COPY benchmarks ./benchmarks

# The CPU onnxruntime wheel and onnxruntime-gpu install the same module: keep only the GPU one.
# DL3013: ".[gpu]" is this project itself; its dependency ranges live in pyproject.toml.
# hadolint ignore=DL3013
RUN python3 -m venv "$VIRTUAL_ENV" \
    && pip install "pip==25.3" \
    && pip install ".[gpu]" "torch==2.13.0" \
    && pip uninstall -y onnxruntime \
    && pip install --force-reinstall --no-deps "onnxruntime-gpu>=1.20"

RUN useradd --create-home --uid 10001 splatcast
USER 10001
WORKDIR /home/splatcast

EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["splatcast"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080", "--render-backend", "torch", "--a2v-runtime", "auto"]
