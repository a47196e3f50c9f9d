"""One loader per dataset. `problems(source)` yields a `Problem` per well-formed row
and a `Malformed` (with its reason) per row that isn't."""

from __future__ import annotations

from typing import Iterator

from pydantic import ValidationError

from lorafleet.services.ingest.normalise import Malformed
from lorafleet.services.ingest.sources import (
    apps, codecontests, files, humaneval, livecodebench, lorafleet, production, synthetic, taco,
)
from lorafleet.shared.config import SourceSection
from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.problems import Problem

LOADERS = {m.NAME: m for m in (codecontests, apps, taco, livecodebench, humaneval, lorafleet, production)}
SOURCE_TYPES = (*LOADERS, synthetic.NAME)


def check_type(name: str) -> str:
    if name not in SOURCE_TYPES:
        raise LorafleetError(f"unknown source {name!r}; allowed: {', '.join(SOURCE_TYPES)}")
    return name


def problems(source: SourceSection, domains: list[str] | None = None) -> Iterator[Problem | Malformed]:
    check_type(source.type)
    if source.type == synthetic.NAME:
        yield from synthetic.problems(source.role, list(domains or []))
        return
    loader = LOADERS[source.type]
    path = source.path
    if not path and not source.hub_name and source.type == humaneval.NAME:
        path = humaneval.default_path()
    for index, row in enumerate(files.rows(path, source.hub_name, source.split)):
        if isinstance(row, Malformed):
            yield row
            continue
        try:
            # rows without an id column (TACO) are named by position, within their split
            yield loader.to_problem(row, f"{source.split}-{index}" if source.split else index)
        except Malformed as exc:
            yield exc
        except ValidationError as exc:  # a value of the wrong shape inside an otherwise readable row
            err = exc.errors()[0]
            yield Malformed("bad_value", f"{'.'.join(map(str, err['loc']))}: {err['msg']}")
