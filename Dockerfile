# macie-exporter container image.
#
#   docker build -t macie-exporter .
#   docker run --rm -p 9729:9729 macie-exporter --demo
#
# BASE_IMAGE is any Debian-like image with python3 (3.11+) and its venv module; the build stage
# makes a virtual environment in /opt/macie-exporter and the final stage copies only that.
# PIP_INSTALL_OPTIONS lets an offline build install from local wheels, e.g.
# "--no-index --find-links=http://127.0.0.1:8000/" (scripts/docker-smoke.sh does this).
# VERSION must equal exporter.__version__ (where the version lives): a label cannot be read from a
# file, so it is written here too, the build fails unless the two agree, and tests/test_version.py
# checks them as well.
ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG VERSION=0.1.0

FROM ${BASE_IMAGE} AS build
ARG PIP_INSTALL_OPTIONS=""
ARG VERSION
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
# hadolint ignore=SC2086
RUN python3 -m venv /opt/macie-exporter \
 && /opt/macie-exporter/bin/pip install ${PIP_INSTALL_OPTIONS} . \
 && /opt/macie-exporter/bin/python -c "import sys, exporter; v = exporter.__version__; \
    v == '${VERSION}' or sys.exit(f'VERSION is ${VERSION} but exporter.__version__ is {v}')" \
 && /opt/macie-exporter/bin/pip uninstall --yes pip \
 && /opt/macie-exporter/bin/python -m compileall -q /opt/macie-exporter/lib

FROM ${BASE_IMAGE}
ARG VERSION
LABEL org.opencontainers.image.title="macie-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Amazon Macie sensitive-data discovery (classification) jobs" \
      org.opencontainers.image.source="https://github.com/macie-exporter/macie-exporter" \
      org.opencontainers.image.url="https://github.com/macie-exporter/macie-exporter" \
      org.opencontainers.image.documentation="https://github.com/macie-exporter/macie-exporter#readme" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /opt/macie-exporter /opt/macie-exporter
ENV PATH=/opt/macie-exporter/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A fixed, numeric non-root UID/GID (Kubernetes' runAsNonRoot can check it without /etc/passwd).
USER 65532:65532
EXPOSE 9729
ENTRYPOINT ["macie-exporter"]
