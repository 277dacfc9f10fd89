"""The policies `reconcile.decide` dispatches to, one module each, each with its own tests
(tests/unit/operator/test_operator_policy_<module>.py):

    finish      success, the terminal failure, activeDeadlineSeconds, ttlSecondsAfterFinished
    failure     a failed, preempted or deleted rank: gang restart with backoff and budget
    stall       a running attempt that stopped stepping: a restart through `failure`
    pending     starting an attempt, pods stuck Pending, pods the API server refuses,
                objects of the job's names owned by another
    suspend     spec.suspend: stop the gang, check the checkpoint, resume
    spec_edits  spec fields edited after the start (ignored, reported)
    trials      hyperparameter-search trials announced as Events
    started_spec  the started spec's digest: a changed ConfigMap is put back (or the job fails)
    adoption    an output folder taken over from another job, announced
    export      spec.output: the export pod (gate, merge, push) after training succeeded,
                its tries, status.output and the Exported condition

Each reads one `Ctx` (context.py) and returns a `Plan` (or None: not its case); status
changes go to `ctx.out` and Events to the plan, and `decide` writes the patch once. The
condition types and reasons they write are named in `reasons.py`.
"""
