"""Operations: logs, metrics, health, tracing. Nothing here is imported by the domain or by relay/.

Importing this package costs nothing: prometheus_client and OpenTelemetry are imported by the
modules that need them (`metrics`, `tracing`), and only when a role uses them.
"""
