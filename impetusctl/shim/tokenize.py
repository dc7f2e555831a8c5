"""stub"""

from starlette.routing import Route

from ..aclient import AsyncDaemon


def routes(daemon: AsyncDaemon) -> list[Route]:
    return []
