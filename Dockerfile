# syntax=docker/dockerfile:1.7
# myomap with ONNX Runtime on the GPU (CUDA 12 + cuDNN 9, as onnxruntime-gpu 1.19+ expects).
# Build: docker build -t myomap:gpu .    Run: see docs/deployment.md.    Without a GPU: Dockerfile.cpu.
ARG CUDA_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

FROM ${CUDA_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/myomap
ENV PATH=/opt/myomap/bin:$PATH
WORKDIR /src
# Only what the wheel contains (the packages listed in pyproject.toml), so that edits to tests or docs keep the
# dependency layer cached.
COPY pyproject.toml README.md ./
COPY config ./config
COPY db ./db
COPY dicomnode ./dicomnode
COPY inference ./inference
COPY phantom ./phantom
COPY reports ./reports
RUN pip install --upgrade pip \
    && pip install ".[gpu,postgres,redis]" \
    && python -c "import onnxruntime, dicomnode.app.cli, reports.web; print(onnxruntime.get_available_providers())"

FROM ${CUDA_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 tini ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/myomap /opt/myomap
ENV PATH=/opt/myomap/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MYOMAP_CONFIG=/etc/myomap/myomap.toml

# The container's defaults: listen on every interface of the container, keep everything in the data volume,
# and take associations only from configured [[peers]]. Mount a site file over this one (docs/deployment.md).
COPY <<'TOML' /etc/myomap/myomap.toml
[dicom]
bind = "0.0.0.0"
port = 11112
allow_any_calling_ae = false

[web]
bind = "0.0.0.0"
port = 8080

[storage]
path = "/var/lib/myomap"
TOML

RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/myomap --no-create-home myomap \
    && mkdir -p /var/lib/myomap \
    && chown myomap:myomap /var/lib/myomap
VOLUME ["/var/lib/myomap"]
EXPOSE 11112 8080
USER myomap
WORKDIR /var/lib/myomap

# Unhealthy when /healthz is not "ok": failing (database, disk below the watermark) or degraded (transfers given up,
# disk near the watermark, queue stalled); the reasons are in `docker inspect` (.State.Health.Log).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "reports.web.healthcheck", "http://127.0.0.1:8080/healthz"]

# tini forwards SIGTERM to the node, which then stops accepting associations and lets running jobs finish.
ENTRYPOINT ["/usr/bin/tini", "--", "myomap"]
CMD ["serve", "--config", "/etc/myomap/myomap.toml"]
