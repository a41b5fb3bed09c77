"""hsepay: payments and orders that agree on money through Kafka, exactly once."""

__version__ = "0.1.0"
