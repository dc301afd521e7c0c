from tests.services import settings  # noqa: F401 - the session fixture for real Kafka + PostgreSQL
