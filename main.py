"""birthjax: `python main.py --config=configs/vanilla.py[:preset] [--workdir=W] [--config.x.y=v]`."""
import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

flags.DEFINE_string("workdir", None, "output folder; default runs/<config name>[-<preset>]")
flags.DEFINE_string("coordinator_address", None, "multi-host: jax.distributed coordinator host:port")
flags.DEFINE_integer("num_processes", None, "multi-host: number of processes")
flags.DEFINE_integer("process_id", None, "multi-host: this process's index")
config_flags.DEFINE_config_file("config", None, "config file (and :preset)", lock_config=True)
flags.mark_flags_as_required(["config"])


def default_workdir() -> str:
  name, _, preset = config_flags.get_config_filename(flags.FLAGS["config"]).partition(":")
  name = os.path.splitext(os.path.basename(name))[0]
  return os.path.join("runs", f"{name}-{preset}" if preset else name)


def _unknown_field(e: Exception, text: str):
  """(field, flag) of an unknown --config.x.y override (ml_collections raises AttributeError
  or KeyError naming the last key, sometimes with 'Did you mean'), else None."""
  if not (isinstance(e, (AttributeError, KeyError)) or "Did you mean" in text):
    return None
  key = re.search(r"(\w+)", text)
  for arg in sys.argv[1:] if key else ():
    m = re.match(rf"--config\.((?:\w+\.)*{key.group(1)})(=|$)", arg)
    if m:
      field = m.group(1)
      hint = re.search(r'Did you mean "(\w+)"', text)
      if hint:
        section = field.rpartition(".")[0]
        field += f" (did you mean {section + '.' if section else ''}{hint.group(1)}?)"
      return field, arg
  return None


def flag_error(e: Exception):
  """A bad flag or config file as one `error:` line (the most specific line of the message)."""
  text = str(e).replace("\\n", "\n")
  unknown = _unknown_field(e, text)
  if unknown:
    print(f"error: unknown config field {unknown[0]} [{unknown[1]}]; fix: correct the field name "
          "(config fields are listed in configs/vanilla.py)", file=sys.stderr)
    sys.exit(2)
  lines = [l.strip() for l in text.splitlines() if l.strip()]
  errors = [i for i, l in enumerate(lines) if re.match(r"^[\w.]+(Error|Exception): ", l)
            or "Errno" in l]
  detail = " ".join(lines[errors[-1]:] if errors else lines).replace("\\'", "'").strip()
  detail = re.sub(r"^[\w.]+(Error|Exception): ", "", detail)  # 'ValueError: x' -> 'x'
  if len(detail) > 1 and detail[0] == detail[-1] and detail[0] in "'\"":
    detail = detail[1:-1]
  detail = detail or type(e).__name__
  print(f"error: {detail} [command line: {' '.join(sys.argv[1:])}]; fix: correct that flag "
        "(config fields are listed in configs/vanilla.py; flags in --helpfull)", file=sys.stderr)
  sys.exit(2)


def parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # flags.Error, or what a config file or override raised
    flag_error(e)


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:  # library INFO lines (JAX's "Unable to initialize
    logging.set_verbosity(logging.WARNING)  # backend 'tpu'", TFDS's build) need --verbosity=0
  import jax
  from birthjax import run
  from birthjax.errors import UserError

  if flags.FLAGS.coordinator_address:
    jax.distributed.initialize(flags.FLAGS.coordinator_address, flags.FLAGS.num_processes,
                               flags.FLAGS.process_id)
  try:
    config = flags.FLAGS.config
    config.model  # the config file loads lazily: fail here, as a flag error
  except Exception as e:
    flag_error(e)
  from birthjax.train.preempt import Preempted
  try:
    command = {"config": config_flags.get_config_filename(flags.FLAGS["config"]),
               "overrides": [a for a in sys.argv[1:] if a.startswith("--config.")]}
    run.run(config, flags.FLAGS.workdir or default_workdir(), command)
  except UserError as e:
    print(e.line(), file=sys.stderr)
    sys.exit(1)
  except Preempted as e:  # SIGTERM / SIGINT: saved, resumable
    print(e.line, flush=True)
    sys.exit(e.code)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
