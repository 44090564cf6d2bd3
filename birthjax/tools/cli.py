"""The command line of the `python -m birthjax.X` tools: absl flags, errors as one line.

Each entry module (birthjax/X.py) calls `run(main)`, absl's app.run with three changes:
- `--help` (also -h, -?, --helpshort) prints the entry's docstring and the tool's flags on
  stdout and exits 0; --helpfull adds every absl flag;
- a flag error (an unknown flag, a bad value) is one `error:` line on stderr, exit 2, the
  way main.py reports them;
- absl logging defaults to WARNING (library INFO lines need --verbosity=0).
`main(argv)` gets the positional arguments in argv[1:] and returns the exit status (None: 0);
a UserError it raises is printed as its one `error:` line, exit 1, a UsageError (a bad
command line) exit 2.

absl's FLAGS is one global: a flag name defined by two imported modules is a
DuplicateFlagError. Every tool module is imported into one process (the tests), so a flag
that more than one tool takes is defined here, once, and declared a key flag of each tool
that takes it (flags.declare_key_flag), which lists it in that tool's --help.
"""
from __future__ import annotations

import sys

from absl import app, flags, logging

from birthjax.errors import UserError

OUT = flags.DEFINE_string(
    "out", None, "where to write: a folder, created if missing (analysis), the .params file "
    "(interop export)")

HELP = ("-h", "-?", "--help", "-help", "--helpshort", "-helpshort")
HELPFULL = ("--helpfull", "-helpfull")


class UsageError(UserError):
  """A command line a tool cannot run (exit 2)."""


def where(argv) -> str:
  """The `where` of a UserError about the command line argv (argv[0]: the program)."""
  return "command line: " + " ".join(argv[1:]) if argv[1:] else "command line"


def _prog() -> str:
  spec = getattr(sys.modules["__main__"], "__spec__", None)
  return f"python -m {spec.name}" if spec is not None and spec.name else sys.argv[0]


def _wants(argv, names) -> bool:
  args = argv[1:]
  return any(a in names for a in (args[:args.index("--")] if "--" in args else args))


def help_text(main, full: bool = False) -> str:
  """The entry's docstring (absl's usage line), then the flags of main's module."""
  doc = (sys.modules["__main__"].__doc__ or "").strip() or f"usage: {_prog()}"
  text = flags.FLAGS.get_help() if full else flags.FLAGS.module_help(main.__module__)
  text = text.strip() or "(no flags)"
  hint = "" if full else "\n\n--helpfull lists absl's own flags too (--verbosity, ...)."
  return f"{doc}\n\nflags:\n{text}{hint}\n"


def parse(argv: list[str], prog: str) -> list[str]:
  """FLAGS(argv), a flag error printed as one `error:` line (exit 2); the positional args."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(UserError(str(e).strip(), where(argv),
                    f"see {prog} --help").line(), file=sys.stderr)
    sys.exit(2)


def _call(main, argv):
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  try:
    return main(argv)
  except UserError as e:
    print(e.line(), file=sys.stderr)
    return 2 if isinstance(e, UsageError) else 1


def run(main) -> None:
  """app.run(main) with --help that exits 0 and flag errors as one `error:` line."""
  prog = _prog()

  def parser(argv):
    for names, full in ((HELPFULL, True), (HELP, False)):
      if _wants(argv, names):
        sys.stdout.write(help_text(main, full))
        sys.exit(0)
    return parse(argv, prog)

  app.run(lambda argv: _call(main, argv), flags_parser=parser)


def call(main, args: list[str], prog: str = "python -m birthjax") -> int:
  """main's exit status for the command line `args`, in this process (the tests): the flags are
  parsed afresh as run() parses them and restored afterwards."""
  from absl.testing import flagsaver
  with flagsaver.flagsaver():
    flags.FLAGS.unparse_flags()
    try:
      code = _call(main, parse([prog, *args], prog))
    except SystemExit as e:
      code = e.code
  return 0 if code is None else code
