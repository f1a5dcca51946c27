"""Shared test configuration. Fixture modules live in tests/fixtures/ and are listed here."""

pytest_plugins = [
    "tests.fixtures.ports",
    "tests.fixtures.certs",
    "tests.fixtures.redis",
    "tests.fixtures.kannel",
    "tests.fixtures.privacy",
    "tests.fixtures.prometheus",
    "tests.fixtures.server",
    "tests.fixtures.browser",
    "tests.fixtures.media",
    "tests.fixtures.sfu",
    "tests.fixtures.production",
    "tests.fixtures.coturn",
]
