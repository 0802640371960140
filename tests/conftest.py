"""Project-wide pytest setup: shared fixture plugins (real local servers) are registered here."""

pytest_plugins: list[str] = [
    "tests.fixtures.servers",  # redis-server, DynamoDB Local, moto SQS on free loopback ports
]
