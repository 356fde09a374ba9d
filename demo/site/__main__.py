"""`python -m demo.site build DIR` | `python -m demo.site serve [--port N] [-- CMD ...]`.

`serve` builds the site into a temporary directory and serves it on 127.0.0.1; with a
command after `--` it runs the command while serving and exits with its status (this is
how `make demo` crawls the site), else it serves until interrupted.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from demo.site import build_site, serve


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, command = argv[:at], argv[at + 1:]
    parser = argparse.ArgumentParser(prog="python -m demo.site")
    sub = parser.add_subparsers(dest="action", required=True)
    b = sub.add_parser("build", help="write the site into a directory")
    b.add_argument("out", type=Path)
    s = sub.add_parser("serve", help="build and serve on 127.0.0.1 (optionally while CMD runs)")
    s.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)

    if args.action == "build":
        print(build_site(args.out))
        return 0
    with tempfile.TemporaryDirectory(prefix="lmforge-demo-site-") as tmp:
        site = build_site(Path(tmp))
        try:
            server = serve(site, args.port)
        except OSError as exc:
            print(f"demo site: cannot listen on 127.0.0.1:{args.port} ({exc.strerror}). "
                  f"Another demo server may be running: stop it, or serve on a free port with "
                  f"`python -m demo.site serve --port N` and change the crawl seed in "
                  f"configs/demo.yaml to match.", file=sys.stderr)
            return 2
        print(f"demo site: http://127.0.0.1:{args.port}/ (from {site})", file=sys.stderr)
        try:
            if command:
                return subprocess.call(command)
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 130
        finally:
            server.shutdown()
            server.server_close()


if __name__ == "__main__":
    sys.exit(main())
