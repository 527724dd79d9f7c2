"""python -m bench NAME [options]: run one benchmark, or the load test, against this checkout.

Each benchmark is a module of this package with a Django ``Command`` (its options, its output),
run here rather than by manage.py so that it is neither an app's management command nor part of
the image. ``python -m bench --help`` lists them; ``python -m bench NAME --help`` gives one's
options.
"""

import importlib
import os
import sys
import textwrap
from argparse import ArgumentParser
from types import ModuleType

# In the order of 'make bench', then the load test ('make loadtest'), then the measurements
# made by hand on labelled photos (not in make bench).
BENCHMARKS = (
    "classification",
    "observability",
    "garment",
    "zero_shot",
    "jpeg_draft",
    "quantization",
    "reporting",
    "reliability",
    "loadtest",
    "browser_resize",
)
PROG = "python -m bench"
USAGE = f"usage: {PROG} NAME [options]   ({PROG} NAME --help for its options)"


def _django_setup(argv: list[str]) -> None:
    """Django as manage.py starts it: --settings and --pythonpath are honoured before setup."""
    from django.core.management.base import handle_default_options

    early = ArgumentParser(add_help=False)
    early.add_argument("--settings")
    early.add_argument("--pythonpath")
    options, _ = early.parse_known_args(argv)
    handle_default_options(options)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "classifier_site.settings")
    import django

    django.setup()


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"bench.{name}")


def _help() -> str:
    lines = [USAGE, "", "Benchmarks:"]
    for name in BENCHMARKS:
        summary = " ".join(_module(name).Command.help.split())
        lines.append(
            textwrap.fill(summary, 100, initial_indent=f"  {name:<16}", subsequent_indent=" " * 18)
        )
    lines += [
        "",
        "'make bench' runs all but loadtest and browser_resize (labelled photos, run by hand);",
        "'make loadtest' runs loadtest. Their figures go to var/bench/; README.md and",
        "docs/performance.md say what they mean.",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help", "help"}:
        _django_setup([])
        print(_help(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, *options = argv
    if name not in BENCHMARKS:
        print(
            f"{USAGE}\n{PROG}: unknown benchmark {name!r} (of {', '.join(BENCHMARKS)})",
            file=sys.stderr,
        )
        return 2
    _django_setup(options)
    # BaseCommand parses the options, runs the system checks as manage.py would, prints a
    # CommandError as one line and exits with its status.
    _module(name).Command().run_from_argv([PROG, name, *options])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
