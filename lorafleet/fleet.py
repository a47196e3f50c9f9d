"""The services this application composes: their names, and loading one by name."""

from __future__ import annotations

from lorafleet.shared.errors import LorafleetError
from lorafleet.shared.service import Service

SERVICES = ("ingest", "enrich", "trainer", "evaluator", "registry")
# HTTP services: no durable consumer of their own; `lorafleet up` starts them too.
WEB_SERVICES = ("gateway", "dashboard")


def run_server(name: str, settings) -> None:
    """Run an HTTP service until SIGINT/SIGTERM (its port: LORAFLEET_<NAME>_PORT, set by `serve --port`)."""
    if name == "gateway":
        from lorafleet.services.gateway.app import run
        from lorafleet.services.gateway.settings import get_gateway_settings

        run(settings, get_gateway_settings())
        return
    import asyncio

    asyncio.run(load_service(name).run(settings))


def load_service(name: str) -> Service:
    """`lorafleet.services.<name>.app:service`; a missing or broken module is a clear error."""
    import importlib

    module_name = f"lorafleet.services.{name}.app"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise LorafleetError(f"service {name!r} has no app module ({module_name}): is the service implemented?") from exc
        raise LorafleetError(f"service {name!r} needs {exc.name!r}, which is not installed: "
                             f"install the extra, e.g. pip install 'lorafleet[{name}]'") from exc
    service = getattr(module, "service", None)
    if not isinstance(service, Service):
        raise LorafleetError(f"{module_name} has no `service = Service(...)`")
    return service
