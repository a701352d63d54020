#!/usr/bin/env bash
# What the tests need beside the Python packages: Debian's chromium (the book and JupyterLab
# browser tests) and a one-node Slurm cluster with accounting (the Slurm tests). `make test`
# runs this first (`make services` alone). As root on Debian it installs and starts both;
# where it cannot, it says why, and the tests that need the missing service skip with that
# reason and this command.
set -uo pipefail
cd "$(dirname "$0")/.."
missing=0
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  echo "services: chromium $(chromium --version 2>/dev/null | awk '{print $2}')"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "services: installing Debian's chromium (browser tests)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; } \
    || { echo "services: chromium could not be installed; the browser tests will skip"; missing=1; }
else
  echo "services: chromium is missing and installing it needs root and apt-get; the browser tests will skip"
  missing=1
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || command -v sbatch >/dev/null 2>&1; then
  bash bench/slurm_cluster.sh start || { echo "services: the Slurm cluster did not start; the Slurm tests will skip"; missing=1; }
else
  echo "services: no Slurm client, and installing one needs root and apt-get; the Slurm tests will skip"
  missing=1
fi
# In CI (CI=true) a service that could not be had fails the run instead of skipping its tests.
if [ "$missing" = 1 ] && [ "${CI:-}" = true ]; then echo "services: CI needs every service" >&2; exit 1; fi
exit 0
