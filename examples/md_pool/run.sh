#!/bin/sh
# Worked example: a design from an MD pool (Zr, EAM standing in for DFT). About a minute.
# Run from this folder:  sh run.sh [path/to/Zr_mm.eam.fs]   (make eam fetches it)
set -e
EAM=${1:-../../third_party/Zr_mm.eam.fs}
PICKS=${PICKS:-15}

# 1. the pool: 5 MD runs (bulk and vacancy at 300 K and 1500 K, a (0001) slab), 12 frames each
python md_pool.py pool --eam "$EAM" -o md --snapshots 12

# 2. descriptors of every frame of every file (any format ASE reads; ids given on read)
mlpdesign describe md/*.traj -o pool.h5 --jobs 2 --force

# 3. the design: one stratum per input file (per MD run), MaxEnt within each (the recipe of
#    docs/md-pools.md: plain max-min leaves out a dilute defect at 300 K), then the picks
#    read back from the trajectories (with their MD energies)
mlpdesign select pool.h5 -n "$PICKS" --stratify-by source --criterion maxent -o selection.h5 --force
mlpdesign write md/*.traj selection.h5 -o train.xyz --force

# 4. labels (the EAM standing in for DFT) and a GAP with the design's own kernel
mlpdesign label train.xyz --eam "$EAM" -o labelled.xyz --force
mlpdesign fit labelled.xyz --store pool.h5 --n-sparse soap=100 -o model --force

# 5. where the picks came from, and the pool scored against them (largest sigma^2 first)
python md_pool.py count train.xyz
mlpdesign score pool.h5 --train selection.h5 --top 5 -o scores.json --force
