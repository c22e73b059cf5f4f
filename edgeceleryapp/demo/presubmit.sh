#!/bin/sh
# Demo preprocess: runs in the job's work directory before submission.
echo "preprocessed subjob $EDGECELERY_SUBJOB_ID" > preprocess.log
