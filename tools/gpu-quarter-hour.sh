#!/usr/bin/env bash
# One GPU quarter-hour on a lent machine: work through the work list within a time budget and
# pack every record it made (runs and benchmarks) into $OUT/records.tar.gz, with its log.
#
#   on the GPU machine (repository root; carry .data/ holding cifar10-jpeg.tar.gz):
#     bash tools/gpu-quarter-hour.sh                       # about 7 minutes of work, then packs
#   back here, with the archive the call returned:
#     python -m sparse_survey worklist unpack PATH/records.tar.gz   # checks, then installs
#
# BUDGET (seconds of work started, default 420: a call of at most 9 minutes with the start and
# the run in flight), WORKLIST, RESULTS and SPARSE_SURVEY_DATA override the defaults. The data
# archive is read directly (decoded once, cached under $SPARSE_SURVEY_CACHE).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder the records archive goes to}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export SPARSE_SURVEY_DATA="${SPARSE_SURVEY_DATA:-$PWD/.data/cifar10-jpeg.tar.gz}"
python3 -m sparse_survey worklist run --time-budget "${BUDGET:-420}" \
  --worklist "${WORKLIST:-worklist.yaml}" --results "${RESULTS:-results}" \
  --pack "$OUT/records.tar.gz" --no-progress 2>&1 | tee "$OUT/log.txt"
