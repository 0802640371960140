"""Chat turns: the orchestration shared by the HTTP API and the queue worker.

A turn = build the context (stored history + new messages, fitted to the window), run the model, then append
the new messages and the reply to the transcript in one atomic write.
"""

from clawdbot.chat.service import ChatService, PreparedTurn, TurnRequest, TurnResult

__all__ = ["ChatService", "PreparedTurn", "TurnRequest", "TurnResult"]
