"""When a loaded model must be loaded again for a ``models.load``: other options, another
backend, other compute nodes. One predicate decides; a model still running requests is
not cut short."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import msgspec

from impetusd.protocol.errors import ImpetusError, InvalidParams, NoBackend

if TYPE_CHECKING:
    from impetusd.residency.plan import LoadRequest
    from impetusd.residency.resident import Resident


class Reload(msgspec.Struct, frozen=True):
    """Why the loaded model does not serve the load: what differs, and the reason its
    unload gives (log line and ``model.unloaded`` event)."""

    differs: Literal["options", "backend", "nodes"]
    why: str


def needs_reload(current: Resident, request: LoadRequest) -> Reload | None:
    """Whether ``current`` must be loaded again for ``request`` (None: it serves it as it is).
    Only what the request names counts: options, backend or nodes left out keep the model's."""
    if request.options is not None and request.options != current.spec.options:
        return Reload(differs="options", why="unloaded to load with other settings")
    if request.backend and request.backend != current.backend.name:
        return Reload(differs="backend", why=f"unloaded to switch to {request.backend}")
    if request.nodes is not None and request.nodes != current.requested_nodes:
        return Reload(differs="nodes", why=f"unloaded to move to nodes {request.nodes or 'none'}")
    return None


def busy(current: Resident, reload: Reload, request: LoadRequest) -> ImpetusError:
    """The refusal of a reload while ``current`` runs requests (switching would cut them short)."""
    name, running = current.spec.name, current.in_flight
    if reload.differs == "options":
        return NoBackend(f"{name} is running {running} request(s); load it with other settings when they have finished", backend=request.backend)
    if reload.differs == "backend":
        return NoBackend(
            f"{name} is running {running} request(s) on {current.backend.name}; load it on {request.backend} when they have finished",
            backend=request.backend,
            loaded_on=current.backend.name,
        )
    return InvalidParams(
        f"{name} is running {running} request(s) on nodes {current.requested_nodes or 'none'}; load it on others when they have finished",
        model=name,
    )
