# One image for every role; the role is the hsepay command (compose: `command: [relay, payments]`).
# Build: docker build -t hsepay .      Run everything (embedded engines): docker run -p 3000:3000 hsepay
# BASE is any Debian-like image with Python >= 3.11 and its venv module: python:3.11-slim from a registry by
# default; CI builds on a Debian bookworm made locally with debootstrap (.ci/stage-image.sh), since no image
# registry is reachable there:  podman build --build-arg BASE=localhost/hsepay-base:bookworm .
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
WORKDIR /src
# A virtual environment, not the system interpreter: Debian's python3 refuses `pip install` (PEP 668).
RUN python3 -m venv /opt/build
COPY pyproject.toml README.md ./
COPY hsepay ./hsepay
# Wheels of hsepay and every dependency, with the tracing extra (OpenTelemetry stays off unless configured).
# A network whose HTTPS goes through a proxy with its own CA (CI's) passes that bundle as a build secret,
# `--secret id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt`: used by pip here, never stored in a layer.
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && /opt/build/bin/pip wheel --no-cache-dir --wheel-dir /wheels ".[tracing]"

FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HSEPAY_LOG_FORMAT=json \
    HSEPAY_DATA_DIR=/home/hsepay/data \
    PATH=/opt/hsepay/bin:$PATH
RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin hsepay
COPY --from=build /wheels /wheels
RUN python3 -m venv /opt/hsepay \
    && /opt/hsepay/bin/pip install --no-cache-dir --no-index --find-links /wheels "hsepay[tracing]" \
    && rm -rf /wheels
USER 10001:10001
WORKDIR /home/hsepay
EXPOSE 8080 8081 3000 9100
# Health checks live in docker-compose.yml, per role: each role listens on its own port.
ENTRYPOINT ["hsepay"]
CMD ["up", "--host", "0.0.0.0"]
