"""`python -m skyhaul.orbit`: run the orbit service until SIGTERM/SIGINT (settings from SKYHAUL_*)."""

from skyhaul.orbit.service import build
from skyhaul.runtime.services import serve_service


def serve() -> int:
    return serve_service("orbit", build)


if __name__ == "__main__":
    raise SystemExit(serve())
