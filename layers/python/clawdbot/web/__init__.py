"""The browser pages served by the app itself: the chat page (``/``) and the operations page (``/ops``).

``clawdbot.web.routes.install(app)`` mounts them; ``create_app`` calls it.
"""
