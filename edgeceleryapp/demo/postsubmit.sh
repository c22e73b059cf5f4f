#!/bin/sh
# Demo postprocess: runs in the job's work directory after the batch job.
wc -l < events.lhe > events.count 2>/dev/null || true
echo "postprocessed subjob $EDGECELERY_SUBJOB_ID (exit $EDGECELERY_EXIT_CODE)" > postprocess.log
