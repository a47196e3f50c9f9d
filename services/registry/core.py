"""Pure state transitions of one adapter name: data in, (new state, events) out.

Every function takes the current `AdapterState` (or None), never mutates it,
and returns a `Change`. Event ids derive from the name and the state's
transition counter, so two replicas computing the same change from the same
revision publish the same ids (deduplicated by JetStream), and a retry after a
lost compare-and-set recomputes from fresh data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable

from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.events import (
    AdapterAbSampleRatioMismatch,
    AdapterAbStarted,
    AdapterEvaluated,
    AdapterPromoted,
    AdapterRegistered,
    AdapterRejected,
    AdapterRolledBack,
    Event,
    derive_id,
)

from . import abtest
from .model import (
    BASE_VERSION,
    HISTORY_LIMIT,
    NAME_RE,
    AbTest,
    AdapterInfo,
    AdapterState,
    Counters,
    Evaluation,
    HistoryEntry,
    OutboxItem,
    Version,
)
from .settings import RegistrySettings


class RegistryError(LorafleetError):
    """A registry request that can't be applied (unknown version, rejected, no predecessor...)."""


@dataclass
class Change:
    state: AdapterState | None  # None: nothing to write
    events: list[Event] = field(default_factory=list)
    dead: list[tuple[int, str]] = field(default_factory=list)  # (stream seq, reason) of rejected outcomes
    result: Any = None


@dataclass(frozen=True)
class Outcome:
    seq: int
    version: int
    success: bool
    latency_ms: float
    error: bool = False


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise RegistryError(
            f"adapter name {name!r} is invalid: use letters, digits, '-' and '_' (up to 64, starting with a letter or digit)"
        )
    return name


def _begin(state: AdapterState) -> AdapterState:
    new = state.model_copy(deep=True)
    new.seq += 1
    return new


def _emit(state: AdapterState, cls: type[Event], request_id: str, index: int = 0, **fields: Any) -> Event:
    event = cls(event_id=derive_id("registry", state.name, state.seq, cls.event_type, index),
                request_id=request_id, **fields)
    state.outbox.append(OutboxItem(event_type=cls.event_type, data=event.model_dump(mode="json")))
    return event


def _log(state: AdapterState, now: datetime, action: str, version: int | None, detail: str = "",
         statistics: dict[str, Any] | None = None) -> None:
    state.history.append(HistoryEntry(at=now, action=action, version=version, detail=detail, statistics=statistics))
    del state.history[:-HISTORY_LIMIT]


def _known(state: AdapterState | None, name: str) -> None:
    if state is None:
        raise RegistryError(f"unknown adapter {name!r}: nothing is registered under that name (see `lorafleet registry list`)")


def _get(state: AdapterState | None, name: str, version: int) -> "Version":
    _known(state, name)
    if version not in state.versions:
        known = ", ".join(str(v) for v in sorted(state.versions)) or "none"
        raise RegistryError(f"{name} has no version {version} (known versions: {known})")
    return state.versions[version]


def _request_id(state: AdapterState, *versions: int | None) -> str:
    for v in versions:
        if v is not None and v in state.versions:
            return state.versions[v].request_id
    return derive_id("registry", state.name)


def _ab_stats(state: AdapterState) -> tuple[Counters, Counters]:
    ab = state.ab
    assert ab is not None
    cand = state.versions[ab.candidate].metrics.minus(ab.candidate_baseline)
    ctrl = state.counters(ab.control).minus(ab.control_baseline)
    return cand, ctrl


def _rebaseline(state: AdapterState) -> None:
    """The control arm changed (promotion/rollback under a running test): a fresh test, counted afresh."""
    if state.ab is None:
        return
    state.ab.control = state.active
    state.ab.candidate_baseline = state.versions[state.ab.candidate].metrics.model_copy()
    state.ab.control_baseline = state.counters(state.active).model_copy()
    state.ab.running = abtest.Running()
    state.ab.split_from = (0, 0)
    state.ab.status = "running"


def _arm_versions(ab: AbTest) -> tuple[int, int]:
    return ab.candidate, ab.control if ab.control is not None else BASE_VERSION


# --------------------------------------------------------------------------- register


def gate_reasons(ev: AdapterEvaluated) -> list[str]:
    reasons = [
        f"{c.name}: measured {c.measured if c.measured is not None else 'nothing'}, needs {c.comparison} {c.threshold}"
        for c in ev.gate if not c.passed
    ]
    return reasons or ["gate failed"]


def already_registered(state: AdapterState | None, ev: AdapterEvaluated) -> bool:
    """True for a redelivery of a recorded version; raises if the version can't be registered."""
    name = check_name(ev.adapter_name)
    if ev.version < 1:
        raise RegistryError(f"{name} version {ev.version} is invalid: versions start at 1")
    if state is not None and ev.version in state.versions:
        existing = state.versions[ev.version]
        if existing.artifact.sha256 == ev.adapter.sha256:
            return True
        raise RegistryError(
            f"{name} v{ev.version} is already registered with artifact sha256 {existing.artifact.sha256[:12]}…, "
            f"not {ev.adapter.sha256[:12]}…: versions are immutable, train a new version"
        )
    if state is not None and state.versions and ev.version < max(state.versions):
        raise RegistryError(
            f"{name} v{ev.version} is older than the latest registered v{max(state.versions)}: versions are monotonic per adapter"
        )
    return False


def register(
    state: AdapterState | None,
    ev: AdapterEvaluated,
    info: AdapterInfo,
    lora_int_id: int | None,
    now: datetime,
    settings: RegistrySettings,
    train_config: dict[str, Any] | None = None,
    trace_context: dict[str, str] | None = None,
) -> Change:
    """adapter.evaluated: record the version (candidate, or rejected if the gate failed); maybe start an A/B test."""
    name = check_name(ev.adapter_name)
    if already_registered(state, ev):
        return Change(state=None, result=state.versions[ev.version])  # redelivery: already recorded
    if ev.gate_passed and lora_int_id is None:
        raise ValueError("a version that passed the gate needs a lora_int_id")

    new = _begin(state if state is not None else AdapterState(name=name))
    notes = []
    if ev.rank != info.rank:
        notes.append(f"adapter.evaluated said rank {ev.rank}, adapter_config.json says {info.rank}: using the file")
    if sorted(ev.target_modules) != sorted(info.target_modules):
        notes.append(
            f"adapter.evaluated said target_modules {ev.target_modules}, adapter_config.json says "
            f"{info.target_modules}: using the file"
        )
    version = Version(
        name=name, version=ev.version, status="candidate" if ev.gate_passed else "rejected",
        lora_int_id=lora_int_id if ev.gate_passed else None, artifact=ev.adapter,
        rank=info.rank, lora_alpha=info.lora_alpha, target_modules=info.target_modules,
        domains=list(ev.domains), base_model=ev.base_model, serve_base_model=ev.serve_base_model,
        created_at=now, evaluation=Evaluation(gate_passed=ev.gate_passed, gate=ev.gate, metrics=ev.metrics, report=ev.report),
        notes=notes, request_id=ev.request_id, source_event_id=ev.event_id, train_config=train_config,
        trace_context=trace_context or None,
    )
    new.versions[ev.version] = version
    events: list[Event] = []
    if not ev.gate_passed:
        version.reasons = gate_reasons(ev)
        _log(new, now, "rejected", ev.version, "; ".join(version.reasons))
        events.append(_emit(new, AdapterRejected, ev.request_id, adapter_name=name, version=ev.version, reasons=version.reasons))
        return Change(state=new, events=events, result=version)

    _log(new, now, "registered", ev.version, f"lora_int_id={lora_int_id} rank={info.rank}")
    if settings.ab_auto_start:
        _start_ab(new, ev.version, settings.ab_traffic, now)
    events.append(_emit(new, AdapterRegistered, ev.request_id, adapter_name=name, version=ev.version,
                        lora_int_id=lora_int_id, status=new.versions[ev.version].status))
    if new.ab is not None and new.ab.candidate == ev.version:
        events.append(_emit(new, AdapterAbStarted, ev.request_id, 1, adapter_name=name, candidate_version=ev.version,
                            active_version=new.active, traffic=new.ab.traffic))
    return Change(state=new, events=events, result=new.versions[ev.version])


# --------------------------------------------------------------------------- A/B


def _start_ab(state: AdapterState, version: int, traffic: float, now: datetime) -> None:
    if state.ab is not None and state.ab.candidate != version:
        old = state.ab.candidate
        state.versions[old].status = "candidate"
        _log(state, now, "ab_superseded", old, f"A/B test replaced by v{version}")
    state.versions[version].status = "ab_testing"
    state.ab = AbTest(
        candidate=version, control=state.active, traffic=traffic, started_at=now,
        salt=f"{state.name}/{version}/{state.seq}",
        candidate_baseline=state.versions[version].metrics.model_copy(),
        control_baseline=state.counters(state.active).model_copy(),
    )
    control = f"v{state.active}" if state.active is not None else "the base model"
    _log(state, now, "ab_started", version, f"traffic {traffic:.0%} against {control}")


def _carry_split(state: AdapterState, settings: RegistrySettings) -> None:
    """The traffic share changes: close the sample-ratio segment at the old share (its Bayes factor carries
    over as a factor, which keeps the product a test martingale) and count the next one from here."""
    ab = state.ab
    assert ab is not None
    cand, ctrl = _ab_stats(state)
    seg = (cand.requests - ab.split_from[0], ctrl.requests - ab.split_from[1])
    ab.running.srm_log_e_before += abtest.srm_log_bf(seg, (ab.traffic, 1.0 - ab.traffic), settings.ab_srm_concentration)
    ab.split_from = (cand.requests, ctrl.requests)


def start_ab(state: AdapterState | None, name: str, version: int | None, traffic: float, now: datetime,
             settings: RegistrySettings | None = None) -> Change:
    """Start (or re-target) an A/B test of `version` (default: the running candidate / latest candidate).
    Changing the traffic of a test in `srm` state starts it afresh."""
    if not 0.0 <= traffic <= 1.0:
        raise RegistryError(f"traffic {traffic} is out of range: give a share between 0 and 1 (e.g. 0.2)")
    _known(state, name)
    if version is None:
        if state is not None and state.ab is not None:
            version = state.ab.candidate
        else:
            candidates = [v for v, ver in (state.versions.items() if state else []) if ver.status == "candidate"]
            if not candidates:
                raise RegistryError(f"{name} has no candidate version to A/B test: register one or give --version")
            version = max(candidates)
    ver = _get(state, name, version)
    assert state is not None
    if ver.status == "rejected":
        raise RegistryError(f"{name} v{version} was rejected ({'; '.join(ver.reasons)}): it can't receive traffic")
    if ver.status == "active":
        raise RegistryError(f"{name} v{version} is already active: A/B tests compare a candidate with the active version")
    new = _begin(state)
    if new.ab is not None and new.ab.candidate == version and new.ab.status == "srm":
        new.ab = None  # the split was broken: the counts can't be trusted, start the test afresh
        _log(new, now, "ab_restarted", version, "sample-ratio mismatch cleared by hand: a fresh test")
    if new.ab is not None and new.ab.candidate == version:
        _carry_split(new, settings or RegistrySettings())
        new.ab.traffic = traffic
        _log(new, now, "ab_traffic", version, f"traffic {traffic:.0%}")
        events = [_emit(new, AdapterAbStarted, _request_id(new, version), adapter_name=name, candidate_version=version,
                        active_version=new.active, traffic=traffic)]
        return Change(state=new, events=events, result=new.ab)
    _start_ab(new, version, traffic, now)
    events = [_emit(new, AdapterAbStarted, _request_id(new, version), adapter_name=name, candidate_version=version,
                    active_version=new.active, traffic=traffic)]
    return Change(state=new, events=events, result=new.ab)


def stop_ab(state: AdapterState | None, name: str, now: datetime) -> Change:
    _known(state, name)
    if state is None or state.ab is None:
        raise RegistryError(f"{name} has no A/B test running")
    new = _begin(state)
    assert new.ab is not None
    version = new.ab.candidate
    new.versions[version].status = "candidate"
    new.ab = None
    _log(new, now, "ab_stopped", version, "stopped by hand; the version stays a candidate")
    return Change(state=new)


# --------------------------------------------------------------------------- promote / rollback


def _promote(state: AdapterState, version: int, reason: str, stats: dict[str, Any], now: datetime,
             figures: dict[str, Any] | None = None) -> Event:
    prev = state.active
    if prev is not None:
        state.versions[prev].status = "retired"
        state.versions[prev].reasons.append(f"replaced by v{version}")
    target = state.versions[version]
    target.status = "active"
    target.previous_version = prev
    state.active = version
    if state.ab is not None and state.ab.candidate == version:
        state.ab = None
    else:
        _rebaseline(state)
    _log(state, now, "promoted", version, reason, stats or None)
    figures = {k: v for k, v in (figures or {}).items() if k != "guardrail"}
    return _emit(state, AdapterPromoted, target.request_id, adapter_name=state.name, version=version,
                 previous_version=prev, reason=reason, statistics=stats, **figures)


def promote(state: AdapterState | None, name: str, version: int | None, now: datetime, reason: str = "manual") -> Change:
    """Make `version` (default: the A/B candidate) the active version; the old one retires."""
    _known(state, name)
    if version is None:
        if state is None or state.ab is None:
            raise RegistryError(f"{name} has no A/B candidate to promote: give the VERSION to promote")
        version = state.ab.candidate
    ver = _get(state, name, version)
    assert state is not None
    if ver.status == "rejected":
        raise RegistryError(f"{name} v{version} was rejected by the gate ({'; '.join(ver.reasons)}): it can't be promoted")
    if ver.status == "active":
        raise RegistryError(f"{name} v{version} is already the active version")
    new = _begin(state)
    return Change(state=new, events=[_promote(new, version, reason, {}, now)], result=version)


def rollback(state: AdapterState | None, name: str, now: datetime, reason: str = "manual") -> Change:
    """The active version retires and the one it replaced becomes active again (walks back the chain)."""
    _known(state, name)
    assert state is not None
    if state.active is None:
        raise RegistryError(f"{name} has no active version to roll back")
    current = state.versions[state.active]
    prev = current.previous_version
    if prev is None:
        raise RegistryError(f"{name} v{current.version} has no predecessor to roll back to (it was the first active version)")
    if prev not in state.versions or state.versions[prev].status == "rejected":
        raise RegistryError(f"{name} v{current.version}'s predecessor v{prev} is missing or rejected: promote a version by hand")
    new = _begin(state)
    new.versions[current.version].status = "retired"
    new.versions[current.version].reasons.append(f"rolled back ({reason})")
    new.versions[prev].status = "active"
    new.active = prev
    if new.ab is not None and new.ab.candidate == prev:
        new.ab = None
    _rebaseline(new)
    _log(new, now, "rolled_back", current.version, f"to v{prev}: {reason}")
    event = _emit(new, AdapterRolledBack, current.request_id, adapter_name=name, from_version=current.version,
                  to_version=prev, reason=reason)
    return Change(state=new, events=[event], result=prev)


# --------------------------------------------------------------------------- outcomes


def _evaluate(state: AdapterState, settings: RegistrySettings) -> abtest.AbResult:
    ab = state.ab
    assert ab is not None
    cand, ctrl = _ab_stats(state)
    return abtest.evaluate(
        cand.successes, cand.requests, ctrl.successes, ctrl.requests,
        alpha=settings.ab_alpha, tau=settings.ab_tau, min_samples=settings.ab_min_samples,
        max_samples=settings.ab_max_samples, min_effect=settings.ab_min_effect, previous=ab.running,
        candidate_errors=cand.errors, control_errors=ctrl.errors,
        candidate_latency=(cand.latency_ms_sum, cand.latency_ms_sq_sum),
        control_latency=(ctrl.latency_ms_sum, ctrl.latency_ms_sq_sum),
        guardrail_alpha=settings.ab_guardrail_alpha, max_error_increase=settings.ab_max_error_increase,
        error_tau=settings.ab_error_tau, max_latency_ratio=settings.ab_max_latency_ratio or None,
        latency_tau=settings.ab_latency_tau, traffic=ab.traffic,
        split_counts=(cand.requests - ab.split_from[0], ctrl.requests - ab.split_from[1]),
        srm_alpha=settings.ab_srm_alpha, srm_concentration=settings.ab_srm_concentration,
        split_robust=settings.ab_split_robust,
    )


def _figures(result: abtest.AbResult) -> dict[str, Any]:
    """The always-valid figures an automatic decision's event carries in its own fields."""
    tripped = [g for g in result.guardrails if g.tripped]
    interval = (result.low, result.high) if result.low is not None and result.high is not None else None
    if tripped:
        return dict(p_value=tripped[0].p_value, confidence_interval=interval, guardrail=tripped[0].name)
    p = result.p_better if result.decision == "promote" else result.p_worse
    return dict(p_value=p, confidence_interval=interval)


def _decide(state: AdapterState, settings: RegistrySettings, now: datetime) -> list[Event]:
    """Run the A/B test on the counters; promote, retire the candidate, stop on SRM, or keep going. Mutates `state`."""
    if state.ab is None or state.ab.status == "srm":
        return []  # srm: no automatic decision until someone restarts or stops the test
    result = _evaluate(state, settings)
    state.ab.running = result.running
    if result.decision == "continue":
        return []
    state.seq += 1  # a transition: fresh event ids
    stats = result.model_dump(mode="json", exclude={"running"})
    ab = state.ab
    version = ab.candidate
    control = f"v{ab.control}" if ab.control is not None else "the base model"
    reason = f"A/B against {control}: {result.reason}"
    if result.srm is not None and result.srm.detected:
        ab.status = "srm"
        _log(state, now, "ab_srm", version, reason, stats)
        return [_emit(state, AdapterAbSampleRatioMismatch, state.versions[version].request_id, adapter_name=state.name,
                      candidate_version=version, control_version=ab.control, traffic=ab.traffic,
                      candidate_n=result.candidate_n, control_n=result.control_n, observed_share=result.srm.observed,
                      p_value=result.srm.p_value, statistics=stats)]
    if result.decision == "promote":
        return [_promote(state, version, reason, stats, now, _figures(result))]
    if result.decision == "rollback":
        state.versions[version].status = "retired"
        state.versions[version].reasons.append(reason)
        state.ab = None
        _log(state, now, "ab_rolled_back", version, reason, stats)
        return [_emit(state, AdapterRolledBack, state.versions[version].request_id, adapter_name=state.name,
                      from_version=version, to_version=state.active, reason=reason, statistics=stats,
                      **_figures(result))]
    if result.decision == "inconclusive":
        state.versions[version].status = "candidate"
        state.ab = None
        _log(state, now, "ab_inconclusive", version, reason, stats)
    return []


def apply_outcomes(
    state: AdapterState | None, name: str, outcomes: Iterable[Outcome], settings: RegistrySettings, now: datetime
) -> Change:
    """Count production outcomes (stream order; each stream sequence once) and run the A/B decision."""
    todo = [o for o in outcomes if state is None or o.seq > state.outcome_seq]
    if not todo:
        return Change(state=None)
    if state is None:
        return Change(state=None, dead=[(o.seq, f"unknown adapter {name!r}: nothing is registered under that name")
                                        for o in todo])
    new = state.model_copy(deep=True)
    dead = []
    arms = _arm_versions(new.ab) if new.ab is not None else None
    for o in todo:
        if o.version != BASE_VERSION and o.version not in new.versions:
            dead.append((o.seq, f"{name} has no version {o.version} (0 = base model)"))
        elif o.version != BASE_VERSION and new.versions[o.version].status == "rejected":
            dead.append((o.seq, f"{name} v{o.version} was rejected by the gate and is never served"))
        elif arms is not None and o.version not in arms:
            # The router sends nothing else while a test runs: counting it anywhere would skew an arm or the split.
            dead.append((o.seq, f"{name} {'the base model' if o.version == BASE_VERSION else f'v{o.version}'} "
                                f"(version {o.version}) is not in the running A/B test (candidate v{arms[0]}, control "
                                f"{'the base model' if arms[1] == BASE_VERSION else f'v{arms[1]}'}): not counted"))
        else:
            new.counters(o.version).add(o.success, o.latency_ms, o.error)
        new.outcome_seq = max(new.outcome_seq, o.seq)
    events = _decide(new, settings, now)
    return Change(state=new, events=events, dead=dead)


def drop_outbox(state: AdapterState | None, event_ids: set[str]) -> Change:
    if state is None or not any(i.data.get("event_id") in event_ids for i in state.outbox):
        return Change(state=None)
    new = state.model_copy(deep=True)
    new.outbox = [i for i in new.outbox if i.data.get("event_id") not in event_ids]
    return Change(state=new)


def show_json(state: AdapterState, settings: RegistrySettings) -> dict:
    """What `registry show NAME --json` prints (and the dashboard's adapter page): the entry and its A/B figures."""
    summary = ab_summary(state, settings)
    data = state.model_dump(mode="json", exclude={"outbox"})
    data["ab_statistics"] = summary.model_dump(mode="json") if summary else None
    return data


def ab_summary(state: AdapterState, settings: RegistrySettings) -> abtest.AbResult | None:
    """The running test's current figures (what `registry show` / `registry ab` print)."""
    if state.ab is None:
        return None
    return _evaluate(state, settings)
