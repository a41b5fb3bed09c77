# One image for every role; the role is the hsepay command (compose: `command: [relay, payments]`).
# Build: docker build -t hsepay .      Run everything (embedded engines): docker run -p 3000:3000 hsepay
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY hsepay ./hsepay
# Wheels of hsepay and every dependency, with the tracing extra (OpenTelemetry stays off unless configured).
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[tracing]"

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HSEPAY_LOG_FORMAT=json \
    HSEPAY_DATA_DIR=/home/hsepay/data
RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin hsepay
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "hsepay[tracing]" && rm -rf /wheels
USER 10001:10001
WORKDIR /home/hsepay
EXPOSE 8080 8081 3000 9100
# Health checks live in docker-compose.yml, per role: each role listens on its own port.
ENTRYPOINT ["hsepay"]
CMD ["up", "--host", "0.0.0.0"]
