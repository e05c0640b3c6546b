"""``python -m web``: both listeners on Werkzeug's development server (production runs gunicorn)."""

from __future__ import annotations

import argparse
import threading

from werkzeug.serving import make_server

from config.settings import Settings, get_settings
from web.app import create_app
from web.listeners import Listeners


def serve(settings: Settings, *, public_host: str | None = None, public_port: int | None = None) -> None:
    """Serves the public and the internal listener (WEB_INTERNAL_HOST:WEB_INTERNAL_PORT) until interrupted.

    public_host, public_port: override WEB_PUBLIC_HOST / WEB_PUBLIC_PORT.
    """
    listeners = Listeners.from_settings(settings)
    app = create_app(settings)
    public = make_server(public_host or listeners.public_host, public_port or listeners.public_port, app,
                         threaded=True)
    internal = make_server(listeners.internal_host, listeners.internal_port, app, threaded=True)
    print(f"public listener (webhook): http://{public.host}:{public.port}")
    print(f"internal listener (probes, operator routes): http://{internal.host}:{internal.port}")
    side = threading.Thread(target=internal.serve_forever, name="internal-listener", daemon=True)
    side.start()
    try:
        public.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        internal.shutdown()
        public.server_close()
        internal.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m web", description="Serve the webhook, probes and operator "
                                                                       "routes (development).")
    parser.add_argument("--host", default="127.0.0.1", help="public listener's address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="public listener's port (default WEB_PUBLIC_PORT, "
                                                               "8000)")
    args = parser.parse_args(argv)
    serve(get_settings(), public_host=args.host, public_port=args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
