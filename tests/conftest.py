"""Shared pytest configuration."""

pytest_plugins = ["tests.redis_fixtures", "tests.app_fixtures", "tests.process_fixtures", "tests.browser_fixtures"]
