"""Lambda entry of the chat API: API Gateway HTTP API (payload 2.0) → Mangum → the shared FastAPI app.

Wiring only. The app is built once per execution environment (cold start) and reused by every invocation.
"""

from mangum import Mangum

from clawdbot.api.app import create_app
from clawdbot.metrics.observability import instrument

app = create_app()
# Powertools Logger (request and session id on every line) and Tracer around the invocation.
handler = instrument(Mangum(app, lifespan="off"))
