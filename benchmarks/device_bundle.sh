#!/usr/bin/env bash
# Build .devbundle/: what benchmarks/gpu_session.sh needs on a GPU machine that cannot reach a
# package registry and has its own Python 3.12 + CUDA torch (the lent H100/H200 image, which has
# torch, numpy, pandas, pyarrow, matplotlib, pytest and pyyaml but neither Ray nor Optuna).
#
#     bash benchmarks/device_bundle.sh
#
# Writes .devbundle/site.tar.xz (Ray, Optuna and their missing dependencies as CPython 3.12
# manylinux wheels unpacked into one site directory; Ray's Java jars and dashboard web client are
# dropped, which a Tune sweep never loads, to stay under the device's 64 MiB transfer limit). The
# speed yardstick needs nothing from it: benchmarks/reference.py is in the repository. The versions
# are the ones pyproject.toml pins. .devbundle/ is git-ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PKGS=(ray==2.60.0 optuna==5.0.0 alembic==1.20.1 Mako==1.4.3 colorlog==6.12.0 SQLAlchemy==2.1.9
      jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
      tensorboardX==2.6.5 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0
      typing-inspection==0.4.5)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m pip install -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --target "$work/site" "${PKGS[@]}"
rm -rf "$work/site/ray/jars" "$work/site/ray/dashboard/client/build" "$work/site/bin"
mkdir -p .devbundle
tar -C "$work/site" -cJf .devbundle/site.tar.xz .
du -sh .devbundle/*
