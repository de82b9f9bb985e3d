"""Run the embedded platform's daemon in the foreground: ``python -m serving.platform.local``."""

from __future__ import annotations

import argparse
import asyncio
import logging

from serving.config import DEFAULT_GATEWAY_PORT, state_dir


def main() -> None:
    parser = argparse.ArgumentParser(description="odh embedded platform daemon")
    parser.add_argument("--state-dir", default=None, help="state directory (default $ODH_STATE_DIR or ~/.odh)")
    parser.add_argument("--gateway-port", type=int, default=DEFAULT_GATEWAY_PORT, help="gateway port (0 = any free port)")
    parser.add_argument("--gateway-host", default="127.0.0.1")
    # Written by the daemon itself when it re-executes in place on SIGHUP (`odh restart`): handover.py.
    parser.add_argument("--handover", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per readiness probe is noise
    from serving.platform.local.daemon import Daemon
    from serving.platform.local.handover import Handover

    try:
        handover = Handover.from_arg(args.handover) if args.handover is not None else None
    except ValueError as exc:
        parser.error(str(exc))

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    daemon = Daemon(state_dir(args.state_dir), gateway_host=args.gateway_host, gateway_port=args.gateway_port)
    asyncio.run(daemon.run(handover))


if __name__ == "__main__":
    main()
