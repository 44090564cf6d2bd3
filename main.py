"""birthjax: `python main.py --config=configs/vanilla.py[:preset] [--workdir=W] [--config.x.y=v]`."""
import os
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


def main(argv):
  del argv
  import jax
  from birthjax import run
  from birthjax.errors import UserError

  logging.set_verbosity(logging.WARNING)
  if flags.FLAGS.coordinator_address:
    jax.distributed.initialize(flags.FLAGS.coordinator_address, flags.FLAGS.num_processes,
                               flags.FLAGS.process_id)
  try:
    run.run(flags.FLAGS.config, flags.FLAGS.workdir or default_workdir())
  except UserError as e:
    print(e.line(), file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
