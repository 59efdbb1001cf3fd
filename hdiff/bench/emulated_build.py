"""`python -m hdiff.bench.emulated_build build CONFIG [hdiff build's flags]`: `hdiff build` with the emulated adapter
(hdiff.bench.emulated) and the random-weight architecture folders (hdiff.bench.arch) registered.

It starts as `hdiff build` does: the temporary Prefect server first (unless PREFECT_API_URL names one), so that it
boots while torch, diffusers and the adapters import. This module imports nothing heavy itself: the build's encoder
processes are spawned and import the main module again, as they import the light `hdiff` command.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "build":
        print("usage: python -m hdiff.bench.emulated_build build CONFIG [hdiff build's flags]", file=sys.stderr)
        return 2
    from flows.prefect_api import ApiStart, prefect_api

    api = ApiStart()
    try:
        import hdiff.bench.arch  # noqa: F401 - registers folders of hdiff.bench.arch.write_arch_model
        import hdiff.bench.emulated  # noqa: F401 - registers the emulated adapter
        from hdiff import cli
    except BaseException:
        api.close()
        raise
    with prefect_api(api):  # the build finds it configured and starts none
        return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
