"""The dashboard's actions: the same registry, training and dead-letter code the CLI commands run.

Each action is a pydantic model (a malformed request is a 400 naming the field, and
changes nothing) and a function that applies it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lorafleet.services.registry import core
from lorafleet.services.registry.core import RegistryError
from lorafleet.services.registry.store import now


class _Action(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Promote(_Action):
    adapter: str = Field(min_length=1, max_length=64)
    version: int | None = Field(None, ge=1, description="default: the A/B candidate")


class Rollback(_Action):
    adapter: str = Field(min_length=1, max_length=64)


class AbTraffic(_Action):
    adapter: str = Field(min_length=1, max_length=64)
    traffic: float | None = Field(None, ge=0.0, le=1.0)
    version: int | None = Field(None, ge=1)
    stop: bool = False


class Retrain(_Action):
    adapter: str = Field(min_length=1, max_length=64)


class Replay(_Action):
    seq: int = Field(ge=1, description="stream sequence of the dead letter")


ACTIONS: dict[str, type[_Action]] = {"promote": Promote, "rollback": Rollback, "ab": AbTraffic,
                                     "retrain": Retrain, "replay": Replay}


class BadAction(ValueError):
    """A malformed action request (HTTP 400)."""


def parse_action(kind: str, body: Any) -> _Action:
    cls = ACTIONS.get(kind)
    if cls is None:
        raise BadAction(f"unknown action {kind!r}: one of {', '.join(ACTIONS)}")
    if not isinstance(body, dict):
        raise BadAction(f"the {kind} action needs a JSON object body, e.g. {_example(kind)}")
    try:
        return cls.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
        raise BadAction(f"invalid {kind} action ({problems}); e.g. {_example(kind)}") from None


def _example(kind: str) -> str:
    return {"promote": '{"adapter": "python-lora", "version": 2}', "rollback": '{"adapter": "python-lora"}',
            "ab": '{"adapter": "python-lora", "traffic": 0.2}', "retrain": '{"adapter": "python-lora"}',
            "replay": '{"seq": 123}'}[kind]


async def apply(action: _Action, reader: Any) -> dict[str, Any]:
    """Run it; RegistryError / LorafleetError for what the registry refuses (unknown version, ...)."""
    if isinstance(action, Replay):
        from lorafleet.shared.dead_letters import replay

        letter, seq = await replay(reader.require(), action.seq, timeout=reader.settings.publish_timeout_s)
        return {"message": f"dead letter {action.seq} replayed on {letter.subject} (stream sequence {seq})",
                "subject": letter.subject, "stream_seq": seq}
    store = await reader.registry()
    name = core.check_name(action.adapter)
    if isinstance(action, Promote):  # as `lorafleet registry promote`
        change = await store.apply(name, lambda s: core.promote(s, name, action.version, now()))
        event = change.events[0]
        return {"message": f"{name}: v{event.version} is active", "version": event.version}
    if isinstance(action, Rollback):  # as `lorafleet registry rollback`
        change = await store.apply(name, lambda s: core.rollback(s, name, now()))
        event = change.events[0]
        return {"message": f"{name}: rolled back v{event.from_version} → v{event.to_version} is active",
                "version": event.to_version}
    if isinstance(action, AbTraffic):  # as `lorafleet registry ab`
        if action.stop:
            fn = lambda s: core.stop_ab(s, name, now())  # noqa: E731
        else:
            if action.traffic is None and action.version is None:
                raise BadAction('give "traffic" (0..1), "version", or "stop": true')
            share = action.traffic if action.traffic is not None else store.settings.ab_traffic
            fn = lambda s: core.start_ab(s, name, action.version, share, now())  # noqa: E731
        await store.apply(name, fn)
        state, _ = await store.get(name)
        if state is None or state.ab is None:
            return {"message": f"{name}: no A/B test running"}
        return {"message": f"{name}: A/B v{state.ab.candidate} gets {state.ab.traffic:.0%} of requests",
                "traffic": state.ab.traffic, "candidate": state.ab.candidate}
    if isinstance(action, Retrain):  # as `lorafleet train CONFIG`, with the config the active version was trained with
        from lorafleet.services.registry.collector import Collector
        from lorafleet.services.trainer.follow import request_training
        from lorafleet.shared.config import parse_config

        state, _ = await store.get(name)
        if state is None:
            raise RegistryError(f"unknown adapter {name!r}")
        collector = Collector(store, None, None, None)
        config, _ = await collector.retrain_config(name)
        event, seq = await request_training(reader.require(), reader.settings, parse_config(config, f"{name} retrain"))
        return {"message": f"train.requested {name} (request {event.request_id})", "request_id": event.request_id,
                "stream_seq": seq}
    raise BadAction(f"unsupported action {type(action).__name__}")  # pragma: no cover

