"""`python -m skyhaul.terminal`: run the terminal service until SIGTERM/SIGINT (settings from SKYHAUL_*)."""

from skyhaul.runtime.services import serve_service
from skyhaul.terminal.service import LOOP_FACTORY, build


def serve() -> int:
    return serve_service("terminal", build, loop_factory=LOOP_FACTORY)


if __name__ == "__main__":
    raise SystemExit(serve())
