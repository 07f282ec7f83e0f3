#!/bin/bash
# Puts holder_nemo into the NGC NeMo RL image without changing NeMo RL (run by containers/Dockerfile; docs/containers.md).
#
#   install_holder_nemo.sh install   # holder_nemo + the extras in $HOLDER_NEMO_EXTRAS into the driver venv
#   install_holder_nemo.sh check     # every Python NeMo RL runs imports what it needs from holder_nemo
#
# install: holder_nemo itself editable and --no-deps (package metadata, the `holderpo` command); then the requirements
#   of each extra in HOLDER_NEMO_EXTRAS (space-separated names from pyproject.toml, e.g. "alfworld": the ALFWorld
#   training loop plays its games in the driver's Python), constrained to the version of every package already installed,
#   and refused if any installed package still changed or disappeared (a new package is the only allowed change).
# check: the driver imports the loss, the NeMo RL entry point and each extra's module; every prebuilt Ray worker venv
#   imports the loss (policy workers call it; they see holder_nemo through PYTHONPATH, which NeMo RL forwards).
# Paths (defaults: the v0.7.0 image): HOLDER_NEMO_SRC [/opt/holder_nemo], NEMO_RL_DRIVER_PYTHON
# [/opt/nemo_rl_venv/bin/python], NEMO_RL_VENV_DIR [/opt/ray_venvs], UV [uv].
# HOLDER_NEMO_CHECK_DRIVER_MODULES (unset in the NGC image): the modules the driver must import instead of the loss
#   and the entry point, for a base whose driver venv has no torch (the test tier's stand-in of the NGC image:
#   tests/containers/nemo_rl_standin/Dockerfile); the worker venvs are still checked for the loss.
set -euo pipefail

src=${HOLDER_NEMO_SRC:-/opt/holder_nemo}
py=${NEMO_RL_DRIVER_PYTHON:-/opt/nemo_rl_venv/bin/python}
venvs=${NEMO_RL_VENV_DIR:-/opt/ray_venvs}
uv=${UV:-uv}
read -r -a extras <<<"${HOLDER_NEMO_EXTRAS:-}"
# What each extra must make importable in the driver (the ALFWorld training loop and the game engine it plays).
declare -A extra_modules=([alfworld]="holder_nemo.alfworld.training textworld.envs")

fail() {
  echo "install_holder_nemo.sh: $*" >&2
  exit 1
}

install() {
  "$uv" pip install --python "$py" --no-deps --no-cache --editable "$src"
  ((${#extras[@]})) || return 0
  local work requirements
  work=$(mktemp -d)
  "$uv" pip freeze --python "$py" | sort >"$work/before"
  grep -E '^[A-Za-z0-9._-]+==' "$work/before" >"$work/constraints" || true
  mapfile -t requirements < <("$py" - "$src/pyproject.toml" "${extras[@]}" <<'EOF'
import sys, tomllib
with open(sys.argv[1], "rb") as fh:
    extras = tomllib.load(fh)["project"]["optional-dependencies"]
for name in sys.argv[2:]:
    if name not in extras:
        sys.exit(f"no extra {name!r} in {sys.argv[1]} (known: {', '.join(sorted(extras))})")
    print("\n".join(extras[name]))
EOF
  )
  ((${#requirements[@]})) || fail "could not read the requirements of: ${extras[*]}"
  "$uv" pip install --python "$py" --no-cache --constraint "$work/constraints" "${requirements[@]}" ||
    fail "the extras (${extras[*]}) need a version of an installed package that NeMo RL does not have"
  "$uv" pip freeze --python "$py" | sort >"$work/after"
  local changed
  changed=$(comm -23 "$work/before" "$work/after")
  [[ -z "$changed" ]] || fail "installing ${extras[*]} changed or removed installed packages: ${changed//$'\n'/ }"
  rm -rf "$work"
}

check() {
  local modules=(holder_nemo.nemo_rl.loss holder_nemo.nemo_rl.run_grpo) more name python found=0
  if [[ -n "${HOLDER_NEMO_CHECK_DRIVER_MODULES:-}" ]]; then
    read -r -a modules <<<"$HOLDER_NEMO_CHECK_DRIVER_MODULES"
    echo "driver check limited to ${modules[*]} (HOLDER_NEMO_CHECK_DRIVER_MODULES: a base without torch in the driver)"
  fi
  for name in "${extras[@]}"; do
    read -r -a more <<<"${extra_modules[$name]:-}"
    modules+=("${more[@]}")
  done
  for name in "${modules[@]}"; do
    "$py" -c "import $name" || fail "the driver ($py) cannot import $name"
  done
  echo "$py imports ${modules[*]}"
  for python in "$venvs"/*/bin/python; do
    [[ -x "$python" ]] || continue
    "$python" -c "import holder_nemo.nemo_rl.loss" || fail "Ray worker venv $python cannot import holder_nemo.nemo_rl.loss"
    echo "$python imports holder_nemo.nemo_rl.loss"
    found=$((found + 1))
  done
  ((found)) || fail "no Ray worker venv under $venvs (NEMO_RL_VENV_DIR): nothing checked"
}

case "${1:-}" in
  install) install ;;
  check) check ;;
  *) fail "usage: install_holder_nemo.sh install|check" ;;
esac
