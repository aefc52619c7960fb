"""`python -m skyhaul.region`: run the region service until SIGTERM/SIGINT (settings from SKYHAUL_*)."""

from skyhaul.region.service import build
from skyhaul.runtime.services import serve_service


def serve() -> int:
    return serve_service("region", build)


if __name__ == "__main__":
    raise SystemExit(serve())
