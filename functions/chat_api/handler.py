"""Lambda entry of the chat API: API Gateway HTTP API (payload 2.0) → Mangum → the shared FastAPI app.

Wiring only. The app is built once per execution environment (cold start) and reused by every invocation; with
SnapStart (the stack's default for this function) it is built once per published version, and the hooks of
``clawdbot.snapstart`` make each restored environment reconnect and reseed.
"""

from mangum import Mangum

from clawdbot.api.app import create_app
from clawdbot.api.priming import prime, prime_clients
from clawdbot.metrics.observability import instrument
from clawdbot.snapstart import register_hooks

app = create_app()
# Powertools Logger (request and session id on every line) and Tracer around the invocation.
handler = instrument(Mangum(app, lifespan="off"))
if register_hooks():  # a SnapStart init: what the first request would do lazily is done now, into the snapshot
    prime(app)
else:  # on demand: the clients every keyed request uses, made now (no network call)
    prime_clients(app)
