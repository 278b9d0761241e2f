"""Start the edge detection streaming server: `python run.py --help` lists the flags."""

from __future__ import annotations

import faulthandler
import logging
import signal
import sys
import threading

from waitress import wasyncore

from server import create_app
from server.config import Config, config_from_args
from server.web.lan import lan_urls
from server.web.wsgi import make_server

logger = logging.getLogger("run")


def serve(app, config: Config) -> None:
    """Serve with waitress (threaded, production-grade), or Flask's development server with --dev; then run the
    app's stop steps (server.web.lifecycle)."""
    try:
        if config.dev:
            DEV_SERVER.set()
            _log_urls(app, lan_urls(config.host, config.port))
            app.run(host=config.host, port=config.port, threaded=True, use_reloader=False)
            return
        server = make_server(app, config)
        logger.info("serving on %s:%s with %d threads", config.host, server.effective_port, config.http_threads)
        _log_urls(app, lan_urls(config.host, server.effective_port))
        _run_until_stopped(server)
    except KeyboardInterrupt:
        pass
    finally:
        logger.info("shutting down")
        app.extensions["lifecycle"].stop()


STOP = threading.Event()  # set by SIGINT (Ctrl-C) and SIGTERM (systemd)
LOOP_POLL_S = 0.5


def _run_until_stopped(server) -> None:
    """waitress' loop, a poll at a time, until a signal asks to stop.

    Not server.run() with KeyboardInterrupt: waitress runs its trigger's callbacks under a bare except, so a
    Ctrl-C that lands in one of them (an MJPEG viewer's wake-up, many a second) is swallowed and the server
    never stops. The signal only sets STOP; the loop sees it within LOOP_POLL_S.
    """
    while not STOP.is_set():
        wasyncore.loop(timeout=LOOP_POLL_S, use_poll=True, map=server._map, count=1)
    server.task_dispatcher.shutdown()


def _interrupt(signum, frame) -> None:
    STOP.set()
    if DEV_SERVER.is_set():  # Flask's development server stops on KeyboardInterrupt only
        raise KeyboardInterrupt


DEV_SERVER = threading.Event()  # set when --dev serves with Flask's server instead of waitress


def _log_urls(app, urls: list[str]) -> None:
    access = app.extensions["access"]
    for url in access.urls_with_token(urls):
        logger.info("open %s from a phone or PC on the same network", url)
    if access.mode == "password":
        logger.info("access control: password (login page; HTTP Basic with any user name for scripts)")
    elif access.mode == "off" and not access.no_auth:
        logger.info("access control: off (listening on loopback only)")


def main(argv: list[str] | None = None) -> None:
    config = config_from_args(argv)
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    signal.signal(signal.SIGTERM, _interrupt)  # systemd and docker stop with SIGTERM
    signal.signal(signal.SIGINT, _interrupt)  # Ctrl-C
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1`: every thread's stack, for a hang
    app = create_app(config, start=False)  # built; started here, where its steps show in the log
    app.extensions["lifecycle"].start()
    if config.demo:
        from server.web.demo import start_demo

        start_demo(app.extensions["detection"])
    serve(app, config)


if __name__ == "__main__":
    main(sys.argv[1:])
