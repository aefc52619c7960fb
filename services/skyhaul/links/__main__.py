"""`python -m skyhaul.links`: run the links service until SIGTERM/SIGINT (settings from SKYHAUL_*)."""

from skyhaul.links.service import build
from skyhaul.runtime.services import serve_service


def serve() -> int:
    return serve_service("links", build)


if __name__ == "__main__":
    raise SystemExit(serve())
