# skycrawl control plane (API, conductor, timer loop): `skycrawl up --provider selfhosted`.
#
#   docker build -f deploy/selfhosted/control-plane.Dockerfile -t skycrawl-control-plane .
#
# The same build arguments as engine_container/Dockerfile: BASE_IMAGE (python:3.11-slim),
# PIP_INSTALL_OPTIONS, and a wheelhouse `wheels/` at the root of the context if there is one.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG PIP_INSTALL_OPTIONS=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/skycrawl/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
COPY core/ core/
COPY adapters/ adapters/
COPY functions/ functions/
COPY engine_container/ engine_container/
COPY wheel[s] /tmp/wheels/
RUN python3 -m venv /opt/skycrawl \
    && /opt/skycrawl/bin/pip install --find-links /tmp/wheels ${PIP_INSTALL_OPTIONS} \
        "/src[selfhosted,docker,kubernetes]" \
    && rm -rf /tmp/wheels

RUN groupadd --system --gid 10001 skycrawl \
    && useradd --system --uid 10001 --gid skycrawl --home-dir /data --shell /usr/sbin/nologin skycrawl
WORKDIR /data
USER 10001:10001
EXPOSE 8787
ENTRYPOINT ["skycrawl"]
CMD ["up", "--provider", "selfhosted", "--host", "0.0.0.0", "--port", "8787"]
