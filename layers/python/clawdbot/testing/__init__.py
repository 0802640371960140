"""Test support shared by the test suite and local invocation: sample events and a Lambda context object."""

from clawdbot.testing.context import LambdaContext
from clawdbot.testing.events import DEFAULT_EVENTS_DIR, event_path, load_event

__all__ = ["DEFAULT_EVENTS_DIR", "LambdaContext", "event_path", "load_event"]
