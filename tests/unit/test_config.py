"""Settings from an environment mapping: URLs normalised, every bad value a ConfigError naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from hsepay.config import ConfigError, Settings, normalise_db_url


def test_defaults_with_empty_environment():
    settings = Settings.from_env({})
    assert settings.db.payments_url is None
    assert settings.db.orders_url is None
    assert settings.kafka.bootstrap_servers is None
    assert settings.kafka.orders_topic == "orders"
    assert settings.kafka.payment_status_topic == "payment-status"
    assert settings.data_dir == Path(".hsepay")
    assert settings.security.auth_secrets == ()
    assert not settings.security.auth_enabled


@pytest.mark.parametrize(
    "raw",
    [
        "postgresql://u:p@db.example:5432/payments",
        "postgres://u:p@db.example:5432/payments",
        "postgresql+psycopg://u:p@db.example:5432/payments",
        "  postgresql://u:p@db.example:5432/payments  ",
    ],
)
def test_postgres_urls_are_normalised_to_psycopg(raw):
    settings = Settings.from_env({"HSEPAY_PAYMENTS_DB": raw, "HSEPAY_ORDERS_DB": raw.replace("payments", "orders")})
    assert settings.db.payments_url == "postgresql+psycopg://u:p@db.example:5432/payments"
    assert settings.db.orders_url == "postgresql+psycopg://u:p@db.example:5432/orders"


def test_normalising_keeps_password_and_query():
    url = normalise_db_url("postgres://user:s3cr%40t@host/db?sslmode=require", "X")
    assert url == "postgresql+psycopg://user:s3cr%40t@host/db?sslmode=require"


@pytest.mark.parametrize("variable", ["HSEPAY_PAYMENTS_DB", "HSEPAY_ORDERS_DB"])
@pytest.mark.parametrize(
    "raw, complaint",
    [
        ("mysql://u:p@host/db", "not supported"),
        ("sqlite:///x.db", "not supported"),
        ("postgresql+asyncpg://u:p@host/db", "not supported"),
        ("postgresql://u:p@host", "names no database"),
        ("postgresql://u:p@host/", "names no database"),
        ("not a url", "not a database URL"),
    ],
)
def test_bad_database_url_names_the_variable(variable, raw, complaint):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: raw})
    message = str(caught.value)
    assert message.startswith(f"{variable}:")
    assert complaint in message
    assert "\n" not in message


def test_blank_database_url_means_embedded():
    assert Settings.from_env({"HSEPAY_PAYMENTS_DB": "   "}).db.payments_url is None


@pytest.mark.parametrize("raw", ["localhost:9092", "a:9092,b:9093", " a:9092 , b:9093 ", "[::1]:9092"])
def test_kafka_bootstrap_servers(raw):
    assert Settings.from_env({"HSEPAY_KAFKA": raw}).kafka.bootstrap_servers == raw.replace(" ", "")


@pytest.mark.parametrize("raw", ["localhost", "localhost:", ":9092", "host:port", "a:9092,", "a:9092,,b:1"])
def test_bad_kafka_bootstrap_servers(raw):
    with pytest.raises(ConfigError, match=r"^HSEPAY_KAFKA:"):
        Settings.from_env({"HSEPAY_KAFKA": raw})


@pytest.mark.parametrize(
    "variable",
    [
        "HSEPAY_DB_POOL_SIZE",
        "HSEPAY_KAFKA_PARTITIONS",
        "HSEPAY_KAFKA_REPLICATION",
        "HSEPAY_RELAY_BATCH",
        "HSEPAY_CONSUMER_BATCH",
        "HSEPAY_CONSUMER_MAX_ATTEMPTS",
    ],
)
@pytest.mark.parametrize("raw", ["ten", "1.5", "0", "-3"])
def test_bad_integers_name_the_variable(variable, raw):
    with pytest.raises(ConfigError, match=rf"^{variable}:"):
        Settings.from_env({variable: raw})


def test_integers_are_read():
    settings = Settings.from_env(
        {"HSEPAY_DB_POOL_SIZE": "7", "HSEPAY_KAFKA_PARTITIONS": "12", "HSEPAY_RELAY_BATCH": "50"}
    )
    assert settings.db.pool_size == 7
    assert settings.kafka.partitions == 12
    assert settings.relay.batch_size == 50


@pytest.mark.parametrize(
    "variable",
    [
        "HSEPAY_RELAY_POLL",
        "HSEPAY_OUTBOX_RETENTION",
        "HSEPAY_REDRIVE_AFTER",
        "HSEPAY_KAFKA_DELIVERY_TIMEOUT",
        "HSEPAY_IDEMPOTENCY_TTL",
        "HSEPAY_REQUEST_TIMEOUT",
        "HSEPAY_DB_POOL_TIMEOUT",
    ],
)
@pytest.mark.parametrize("raw", ["soon", "0", "-1", "nan", "inf", "-inf", "1e309", "NaN"])
def test_bad_durations_name_the_variable(variable, raw):
    with pytest.raises(ConfigError, match=rf"^{variable}:"):
        Settings.from_env({variable: raw})


@pytest.mark.parametrize("raw, expected", [("true", True), ("ON", True), ("0", False), ("no", False), ("", None)])
def test_kafka_idempotence_flag(raw, expected):
    assert Settings.from_env({"HSEPAY_KAFKA_IDEMPOTENCE": raw}).kafka.idempotence is expected


def test_bad_boolean_names_the_variable():
    with pytest.raises(ConfigError, match=r"^HSEPAY_KAFKA_IDEMPOTENCE:"):
        Settings.from_env({"HSEPAY_KAFKA_IDEMPOTENCE": "maybe"})


CURRENT, PREVIOUS = "c" * 32, "p" * 40


def test_data_dir_and_auth_secret():
    settings = Settings.from_env({"HSEPAY_DATA_DIR": "/var/lib/hsepay", "HSEPAY_AUTH_SECRET": CURRENT})
    assert settings.data_dir == Path("/var/lib/hsepay")
    assert settings.security.auth_secrets == (CURRENT,)
    assert settings.security.auth_enabled


def test_auth_secrets_for_rotation_are_comma_separated_current_first():
    settings = Settings.from_env({"HSEPAY_AUTH_SECRET": f" {CURRENT} , {PREVIOUS} "})
    assert settings.security.auth_secrets == (CURRENT, PREVIOUS)


@pytest.mark.parametrize("raw", ["short", f"{CURRENT},", f"{CURRENT},,{PREVIOUS}", f"{CURRENT},tiny"])
def test_weak_or_empty_auth_secret_is_refused_without_echoing_it(raw):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"HSEPAY_AUTH_SECRET": raw})
    message = str(caught.value)
    assert message.startswith("HSEPAY_AUTH_SECRET:") and "at least 32" in message
    assert CURRENT not in message and "tiny" not in message and "short" not in message


def test_security_settings_are_read():
    settings = Settings.from_env(
        {
            "HSEPAY_AUTH_SELF_DEPOSIT": "true",
            "HSEPAY_CORS_ORIGINS": "https://shop.example, http://localhost:3000",
            "HSEPAY_RATE_LIMIT": "0",
            "HSEPAY_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1, ::1",
            "HSEPAY_REQUEST_TIMEOUT": "2.5",
            "HSEPAY_DB_POOL_TIMEOUT": "1",
        }
    ).security
    assert settings.self_deposit is True
    assert settings.cors_origins == ("https://shop.example", "http://localhost:3000")
    assert settings.rate_limit == 0
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]
    assert settings.request_timeout == 2.5
    defaults = Settings.from_env({}).security
    assert (defaults.rate_limit, defaults.rate_burst, defaults.request_timeout) == (100, None, 10.0)


@pytest.mark.parametrize(
    "variable, raw",
    [
        ("HSEPAY_CORS_ORIGINS", "evil.example"),
        ("HSEPAY_CORS_ORIGINS", "https://shop.example/path"),
        ("HSEPAY_CORS_ORIGINS", "https://a.example,"),
        ("HSEPAY_TRUSTED_PROXIES", "10.0.0.300"),
        ("HSEPAY_TRUSTED_PROXIES", "proxy.local"),
        ("HSEPAY_RATE_LIMIT", "-1"),
        ("HSEPAY_RATE_LIMIT", "lots"),
        ("HSEPAY_RATE_BURST", "0"),
        ("HSEPAY_AUTH_SELF_DEPOSIT", "sometimes"),
        ("HSEPAY_REQUEST_TIMEOUT", "nan"),
        ("HSEPAY_REQUEST_TIMEOUT", "inf"),
        ("HSEPAY_DB_POOL_TIMEOUT", "-inf"),
        ("HSEPAY_DB_POOL_TIMEOUT", "0"),
    ],
)
def test_bad_security_settings_are_one_line_naming_the_variable(variable, raw):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: raw})
    assert str(caught.value).startswith(f"{variable}:")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "raw", ["postgresql://u:p@host:notaport/db", "postgresql://u:p@host:99999/db", "postgresql://u:p@host:0/db"]
)
def test_bad_database_port_is_one_line_naming_the_variable(raw):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"HSEPAY_ORDERS_DB": raw})
    assert str(caught.value).startswith("HSEPAY_ORDERS_DB:")
    assert ":p@" not in str(caught.value)  # the password never appears in the message


def test_every_setting_is_documented_once_with_its_variable():
    documented = Settings.documented()
    variables = [variable for variable, _, _ in documented]
    assert len(variables) == len(set(variables))
    assert all(variable.startswith("HSEPAY_") and doc for variable, _, doc in documented)


def test_defaults_come_from_the_fields_themselves():
    """What the environment leaves unset is exactly what each field declares, nothing written twice."""
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.relay.batch_size == 1000 and settings.consumer.batch_size == 500


def test_readme_lists_every_variable():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    missing = [variable for variable, _, _ in Settings.documented() if variable not in readme]
    assert not missing, f"README's configuration table lacks {missing}"


def test_sasl_needs_a_user_and_a_password_and_never_shows_the_password():
    settings = Settings.from_env({"HSEPAY_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext"})
    with pytest.raises(ConfigError, match="HSEPAY_KAFKA_SASL_USERNAME and HSEPAY_KAFKA_SASL_PASSWORD"):
        settings.kafka.security_options()
    settings = Settings.from_env(
        {
            "HSEPAY_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "HSEPAY_KAFKA_SASL_MECHANISM": "scram-sha-256",
            "HSEPAY_KAFKA_SASL_USERNAME": "hsepay",
            "HSEPAY_KAFKA_SASL_PASSWORD": "s3cret-value",
            "HSEPAY_AUTH_SECRET": "jwt-s3cret-" * 4,
        }
    )
    assert settings.kafka.security_options() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "hsepay",
        "sasl_plain_password": "s3cret-value",
    }
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    "variable, raw",
    [
        ("HSEPAY_KAFKA_SECURITY_PROTOCOL", "TLS"),
        ("HSEPAY_KAFKA_SASL_MECHANISM", "GSSAPI"),
        ("HSEPAY_KAFKA_SSL_CAFILE", "/nope"),
    ],
)
def test_bad_kafka_security_settings_name_the_variable(variable, raw):
    with pytest.raises(ConfigError, match=rf"^{variable}:"):
        Settings.from_env({variable: raw})


def test_readme_configuration_table_is_the_generated_one():
    """Defaults as an operator writes them (`unset`, `off`), never Python reprs (`()`, `False`)."""
    from hsepay.config.table import markdown_table

    table = markdown_table()
    assert table in (Path(__file__).parents[2] / "README.md").read_text(), "run: python -m hsepay.config.table"
    assert "| () |" not in table and "| False |" not in table and "| None |" not in table


def test_the_settings_repr_shows_no_password_and_no_secret():
    """A repr ends up in logs and tracebacks: database and gateway URLs show *** for their passwords, and
    every secret setting (tokens, event signatures, SASL) is left out."""
    secrets = {
        "HSEPAY_PAYMENTS_DB": ("postgresql://hsepay:db-pass-1@db:5432/payments", "db-pass-1"),
        "HSEPAY_ORDERS_DB": ("postgresql://hsepay@db/orders?password=db-pass-2&sslmode=require", "db-pass-2"),
        "HSEPAY_GATEWAY_ORDERS_URL": ("http://gw:gw-pass-3@orders:8081", "gw-pass-3"),
        "HSEPAY_AUTH_SECRET": ("auth-secret-" + "a" * 32, "auth-secret-"),
        "HSEPAY_ORDERS_EVENT_SECRET": ("orders-event-" + "o" * 32, "orders-event-"),
        "HSEPAY_PAYMENTS_EVENT_SECRET": ("payments-event-" + "p" * 32, "payments-event-"),
        "HSEPAY_KAFKA_SASL_PASSWORD": ("sasl-pass-4", "sasl-pass-4"),
    }
    settings = Settings.from_env({variable: value for variable, (value, _) in secrets.items()})
    shown = repr(settings)
    for variable, (_, secret) in secrets.items():
        assert secret not in shown, variable
    assert "postgresql+psycopg://hsepay:***@db:5432/payments" in shown
    # A `?password=` is read by libpq like any other password: the canonical URL keeps it masked in the netloc.
    assert "postgresql+psycopg://hsepay:***@db/orders?sslmode=require" in shown
    assert settings.db.payments_url.endswith("db-pass-1@db:5432/payments")  # the value itself is intact
