#!/usr/bin/env bash
# mmdet's slurm launcher. Usage: GPUS=8 bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args]
# (add --deploy to evaluate the fused model). On CPU-only nodes GPUS is the number of processes (set GRES=""); gloo is used.
set -x

PARTITION=$1
JOB_NAME=$2
CONFIG=$3
CHECKPOINT=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
PY_ARGS=${@:5}
SRUN_ARGS=${SRUN_ARGS:-""}
GRES=${GRES-"--gres=gpu:${GPUS_PER_NODE}"}  # GRES="" on nodes without GPUs

PYTHONPATH="$(dirname $0)/..":$PYTHONPATH \
srun -p ${PARTITION} \
    --job-name=${JOB_NAME} \
    ${GRES} \
    --ntasks=${GPUS} \
    --ntasks-per-node=${GPUS_PER_NODE} \
    --cpus-per-task=${CPUS_PER_TASK} \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS} \
    python -u $(dirname "$0")/test.py ${CONFIG} ${CHECKPOINT} --launcher="slurm" ${PY_ARGS}
