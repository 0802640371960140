"""Local Lambda invocation: a Runtime API server and a launcher that runs a function folder through AWS's
runtime interface client in a fresh process (``clawdbot invoke``)."""

from clawdbot.local.launcher import InvokeResult, invoke_function
from clawdbot.local.runtime_api import Invocation, Outcome, RuntimeAPIServer

__all__ = ["Invocation", "InvokeResult", "Outcome", "RuntimeAPIServer", "invoke_function"]
