# The image used by charts/lhcad: `lhcad` (entrypoint) plus `dask` for scheduler and workers.
#
#   docker build -t ghcr.io/lhcad/lhcad:0.1.0 .
#   docker run --rm ghcr.io/lhcad/lhcad:0.1.0 run /config/config.yaml
#
# Network choice: torch comes from the PyTorch wheel index, CPU build by default (a plain
# `pip install torch` from PyPI pulls several GB of CUDA wheels). For the chart's GPU worker group
# build a second tag with a CUDA index, e.g.
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t ...:0.1.0-cuda .
# EXTRAS picks the pyproject extras: k8s + facility by default (add `deploy` for the
# QKeras/hls4ml firmware stage). EXTRA_PACKAGES adds pip packages: s3fs by default (the chart's
# storage.type=objectStore with s3:// URLs); add "fsspec-xrootd xrootd" for root:// inputs
# (CMS Open Data) or "gcsfs" for gs:// URLs.
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG EXTRAS=k8s,facility
ARG EXTRA_PACKAGES="s3fs"

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLBACKEND=Agg

RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"

WORKDIR /opt/lhcad
COPY . .
RUN pip install ".[${EXTRAS}]" \
 && if [ -n "${EXTRA_PACKAGES}" ]; then pip install ${EXTRA_PACKAGES}; fi \
 && lhcad --help > /dev/null

# Non-root (the chart's pods run with runAsUser/runAsGroup/fsGroup 1000 and runAsNonRoot).
RUN groupadd --gid 1000 lhcad \
 && useradd --uid 1000 --gid 1000 --create-home --shell /usr/sbin/nologin lhcad
USER 1000:1000
WORKDIR /home/lhcad

ENTRYPOINT ["lhcad"]
CMD ["--help"]
