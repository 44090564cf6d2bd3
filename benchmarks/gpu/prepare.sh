#!/usr/bin/env bash
# Prepare, here, what a GPU machine without network needs for benchmarks/gpu/run_a5.sh, in two
# git-ignored folders (.git/info/exclude) that the device tool carries:
#   .whl/     wheels of birthjax's requirements that the machine's image lacks (its own jax,
#             flax, optax, orbax, numpy... are used as they are), for its Python 3.12, x86-64
#   .a5data/  a copy of the four A5 files (../shared does not travel)
#   bash benchmarks/gpu/prepare.sh [PYTHON]   # PYTHON: a Python 3.12 here (default python3.12)
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${1:-python3.12}
for d in .whl .a5data; do
  grep -qx "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude
done
rm -rf .whl .a5data && mkdir -p .whl .a5data
cp ../shared/data/cs224n_a5/{wiki.txt,birth_places_train.tsv,birth_dev.tsv,birth_test_inputs.tsv} .a5data/
# what requirements.txt pins that the image lacks, with what those need, as wheels (pure-Python
# sdists such as promise are built here); `py` must be a Python 3.12 on x86-64, as there
"$py" -c 'import sys, platform; assert sys.version_info[:2] == (3, 12) and platform.machine() == "x86_64", "need a Python 3.12 on x86-64"'
"$py" -m pip wheel -q -w .whl ml-collections==1.1.0 tensorflow-datasets==4.9.10 grain==0.2.18 \
  array-record==0.8.6 tensorboardX==2.6.5 importlib_resources==7.1.0
# drop what the image has (KINDS.md's package list for nvidia-h200)
have="absl_py attrs certifi charset_normalizer chex cloudpickle etils filelock flax fsspec grpcio h5py \
idna jax jaxlib markdown ml_dtypes msgpack numpy opt_einsum optax orbax_checkpoint packaging pillow \
protobuf psutil pyarrow pyyaml requests rich scipy setuptools six tensorstore toolz tqdm treescope \
typing_extensions urllib3 wrapt zipp humanize simplejson einops pygments markdown_it_py mdurl \
click"
for w in .whl/*.whl; do
  name=$(basename "$w" | cut -d- -f1 | tr 'A-Z.-' 'a-z__')
  for h in $have; do [ "$name" = "$h" ] && rm -f "$w" && break; done
done
ls .whl; du -sh .whl .a5data
