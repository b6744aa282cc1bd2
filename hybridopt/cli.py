"""``hybridopt`` console entry point: dispatches subcommands to their own modules (imported
lazily, so the core never imports sympy, transformers or plotting code)."""
from __future__ import annotations

import importlib
import sys

#: subcommand -> (module, function, one-line help).  Each function takes argv and returns an exit code.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "theory": ("hybridopt.theory.cli", "main", "print the theorem, its lemmas and constants (text or LaTeX)"),
    "finetune": ("hybridopt.benchmarks.cli", "finetune_main", "fine-tune an LLM with one method on a built-in task or a task file"),
    "export": ("hybridopt.benchmarks.cli", "export_main", "write a finished run's model as a transformers directory (base update included)"),
    "grid": ("hybridopt.benchmarks.cli", "grid_main", "learning-rate grid with selection on dev, test of the selected run only"),
    "summarize": ("hybridopt.benchmarks.cli", "summarize_main", "collect result.json files into a Markdown/CSV table"),
    "simulate": ("hybridopt.theory.sim_cli", "main", "run the reshuffling-SGD simulator against the O(1/eps^4) bound"),
    "reproduce": ("hybridopt.benchmarks.pipeline", "main", "run what is missing and draw every figure and table of the paper"),
    "lr-scan": ("hybridopt.benchmarks.lr_scan", "main", "probe ZO learning rates with short runs; the largest stable one"),
    "bench": ("hybridopt.benchmarks.perf.cli", "main", "measure step time and memory of the five methods and a MeZO reference"),
}


def _usage() -> str:
    lines = ["usage: hybridopt <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "Run 'hybridopt <command> --help' for the options of a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:  # no command: the usage, on stderr, and argparse's exit code for a usage error
        print(_usage(), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from . import __version__
        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"hybridopt: unknown command {name!r}; valid: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    return int(getattr(importlib.import_module(module), func)(rest) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
