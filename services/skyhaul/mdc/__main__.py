"""`python -m skyhaul.mdc`: run the mdc service until SIGTERM/SIGINT (settings from SKYHAUL_*)."""

from skyhaul.mdc.service import build
from skyhaul.runtime.services import serve_service


def serve() -> int:
    return serve_service("mdc", build)


if __name__ == "__main__":
    raise SystemExit(serve())
