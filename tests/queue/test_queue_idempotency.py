"""The turn-record contract every idempotency engine keeps (SQLite, DynamoDB Local, Redis standalone and cluster).

These are the guarantees the worker's "one turn per turn id" rests on, checked through Powertools' own API on
real servers: one winner among racing workers, a stored outcome instead of a second run, a lock that a dead
worker cannot hold forever, and keys scoped to the session.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from aws_lambda_powertools.utilities.idempotency import idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
)

from clawdbot.queue.idempotency import KEY_PREFIX, build_persistence_layer, idempotency_config, key_data
from clawdbot.queue.messages import TurnMessage
from tests.queue.conftest import lambda_context

if TYPE_CHECKING:
    from collections.abc import Callable

    from aws_lambda_powertools.utilities.idempotency import BasePersistenceLayer, IdempotencyConfig

    from clawdbot.config.settings import Settings

pytestmark = pytest.mark.parametrize("engine", ["sqlite", "dynamodb", "redis", "redis-cluster"])


@pytest.fixture
def settings(make_settings: Callable[..., Settings], engine: str) -> Settings:
    return make_settings(engine)


@pytest.fixture
def make_layer(settings: Settings) -> Callable[[], BasePersistenceLayer]:
    """Independent layers on one engine, as separate workers have (own clients, same records)."""

    def make() -> BasePersistenceLayer:
        return build_persistence_layer(settings)

    return make


def _config(settings: Settings) -> IdempotencyConfig:
    config = idempotency_config(settings)
    config.register_lambda_context(lambda_context())
    return config


def _turn_id(request: pytest.FixtureRequest) -> str:
    """A turn id no earlier test used (server-backed engines keep records between tests)."""
    return f"t-{abs(hash(request.node.nodeid)):x}-{time.time_ns()}"


def _message(turn_id: str, session_id: str = "sess_a", owner: str | None = None) -> TurnMessage:
    return TurnMessage(session_id=session_id, turn_id=turn_id, content="hi", owner=owner, enqueued_at=1)


def test_only_one_of_many_racing_workers_takes_a_turn(engine: str, make_layer: Callable[[], BasePersistenceLayer],
                                                      request: pytest.FixtureRequest) -> None:
    # GIVEN eight workers, each with its own layer, released at the same instant on one turn
    layers = [make_layer() for _ in range(8)]
    data = key_data(None, "sess_a", _turn_id(request))
    start = threading.Barrier(len(layers))
    outcomes: list[str] = []

    def claim(layer: BasePersistenceLayer) -> None:
        start.wait()
        try:
            layer.save_inprogress(data, remaining_time_in_millis=60_000)
            outcomes.append("won")
        except IdempotencyItemAlreadyExistsError:
            outcomes.append("lost")

    threads = [threading.Thread(target=claim, args=(layer,)) for layer in layers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # THEN exactly one holds the lock
    assert sorted(outcomes) == ["lost"] * 7 + ["won"]
    assert layers[0].get_record(data).status == "INPROGRESS"


def test_a_finished_turn_returns_its_stored_outcome_instead_of_running_again(
        settings: Settings, make_layer: Callable[[], BasePersistenceLayer], request: pytest.FixtureRequest) -> None:
    runs: list[str] = []
    turn_id = _turn_id(request)

    def make_turn(layer: BasePersistenceLayer) -> Callable[..., Any]:
        @idempotent_function(data_keyword_argument="message", persistence_store=layer, config=_config(settings),
                             key_prefix=KEY_PREFIX)
        def turn(message: TurnMessage) -> dict[str, Any]:
            runs.append(message.turn_id)
            return {"status": "done", "reply": {"role": "assistant", "content": "héllo"}, "n": len(runs)}

        return turn

    first = make_turn(make_layer())(message=_message(turn_id))
    again = make_turn(make_layer())(message=_message(turn_id))  # a redelivery, on another worker

    assert runs == [turn_id]
    assert again == first == {"status": "done", "reply": {"role": "assistant", "content": "héllo"}, "n": 1}
    record = make_layer().get_record(key_data(None, "sess_a", turn_id))
    assert record.status == "COMPLETED"
    assert record.response_json_as_dict() == first


def test_a_turn_that_raised_releases_its_lock_for_the_retry(
        settings: Settings, make_layer: Callable[[], BasePersistenceLayer], request: pytest.FixtureRequest) -> None:
    layer = make_layer()
    attempts: list[int] = []

    @idempotent_function(data_keyword_argument="message", persistence_store=layer, config=_config(settings),
                         key_prefix=KEY_PREFIX)
    def flaky_turn(message: TurnMessage) -> dict[str, Any]:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("the model endpoint went away")
        return {"status": "done"}

    message = _message(_turn_id(request))
    with pytest.raises(ConnectionError):
        flaky_turn(message=message)
    with pytest.raises(IdempotencyItemNotFoundError):
        layer.get_record(key_data(None, "sess_a", message.turn_id))
    assert flaky_turn(message=message) == {"status": "done"}
    assert len(attempts) == 2


def test_a_live_lock_turns_a_second_worker_away(
        settings: Settings, make_layer: Callable[[], BasePersistenceLayer], request: pytest.FixtureRequest) -> None:
    holder = make_layer()
    message = _message(_turn_id(request))
    holder.save_inprogress(message.model_dump(mode="json"), remaining_time_in_millis=60_000)
    other = make_layer()

    @idempotent_function(data_keyword_argument="message", persistence_store=other, config=_config(settings),
                         key_prefix=KEY_PREFIX)
    def turn(message: TurnMessage) -> dict[str, Any]:
        raise AssertionError("must not run while another worker holds the turn")

    with pytest.raises(IdempotencyAlreadyInProgressError):
        turn(message=message)


def test_a_dead_workers_lapsed_lock_is_taken_over(
        engine: str, make_layer: Callable[[], BasePersistenceLayer], request: pytest.FixtureRequest) -> None:
    # GIVEN a worker that took the turn with 1 ms left before its Lambda timeout, and died
    data = key_data(None, "sess_a", _turn_id(request))
    make_layer().save_inprogress(data, remaining_time_in_millis=1)
    time.sleep(0.05)
    # WHEN the redelivery reaches another worker THEN it takes the turn
    successor = make_layer()
    successor.save_inprogress(data, remaining_time_in_millis=60_000)
    assert successor.get_record(data).in_progress_expiry_timestamp > time.time() * 1000 + 50_000


def test_turn_records_are_scoped_to_owner_and_session(
        engine: str, make_layer: Callable[[], BasePersistenceLayer], request: pytest.FixtureRequest) -> None:
    layer = make_layer()
    turn_id = _turn_id(request)
    layer.save_inprogress(key_data(None, "sess_a", turn_id), remaining_time_in_millis=60_000)
    # The same client-chosen turn id in another session, or under another key, is another turn.
    layer.save_inprogress(key_data(None, "sess_b", turn_id), remaining_time_in_millis=60_000)
    layer.save_inprogress(key_data("key_2", "sess_a", turn_id), remaining_time_in_millis=60_000)
    with pytest.raises(IdempotencyItemAlreadyExistsError):
        layer.save_inprogress(key_data(None, "sess_a", turn_id), remaining_time_in_millis=60_000)
