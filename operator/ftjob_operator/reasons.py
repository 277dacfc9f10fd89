"""Every condition type, reason and Event type the operator writes, each spelled once.

`ConditionType` names `status.conditions[].type`. `Reason` names what a condition's
`reason`, an Event's `reason` and an attempt record's `reason` (`status.attempts[]`) say;
one reason often plays several of these roles (a failed job's condition reason is also its
Warning Event's reason), so reasons are one set. Users, alerts and dashboards match these
strings: they are API, so rename none of them.

A reason from outside the operator is passed on as it is and not listed here: the
trainer's exit reasons (`contract.exit_reason`, `OutOfMemory`...), a pod's own Kubernetes
reason (`Evicted`, a DisruptionTarget condition's reason) and the reason a permanently
failed trainer wrote in its termination message.
"""

from __future__ import annotations

from typing import Final


class ConditionType:
    """`status.conditions[].type`."""

    # The phase conditions: one per phase but Pending, at most one of them True.
    RUNNING: Final = "Running"
    RESTARTING: Final = "Restarting"
    SUSPENDED: Final = "Suspended"
    SUCCEEDED: Final = "Succeeded"
    FAILED: Final = "Failed"
    # The others.
    INVALID_SPEC: Final = "InvalidSpec"
    POD_CREATION_REJECTED: Final = "PodCreationRejected"
    SUSPEND_CHECKPOINT_SAVED: Final = "SuspendCheckpointSaved"
    SPEC_CHANGE_IGNORED: Final = "SpecChangeIgnored"
    SEARCH_PROGRESS: Final = "SearchProgress"
    OWNERSHIP_CONFLICT: Final = "OwnershipConflict"  # an object the job needs is not its own
    OUTPUT_ADOPTED: Final = "OutputAdopted"  # storage.adoptPreviousOutput took a folder over
    QUEUED: Final = "Queued"  # True while Kueue has not admitted the job (queueName)
    # spec.output, set once the export step has finished: True delivered (reason Pushed or
    # Delivered), False not (reason QualityGateNotMet or ExportFailed). Absent before.
    EXPORTED: Final = "Exported"


PHASE_CONDITIONS: Final = (ConditionType.RUNNING, ConditionType.RESTARTING,
                           ConditionType.SUSPENDED, ConditionType.SUCCEEDED,
                           ConditionType.FAILED)


class Reason:
    """Condition, Event and attempt-record reasons the operator chooses."""

    # Starting and running an attempt
    STARTED: Final = "Started"  # Event: the pods of an attempt were created
    PODS_CREATED: Final = "PodsCreated"
    ALL_PODS_RUNNING: Final = "AllPodsRunning"
    RUNNING: Final = "Running"  # Event: every pod of the attempt runs
    PODS_STOPPING: Final = "PodsStopping"  # a running pod was deleted by someone else
    API_REJECTED: Final = "ApiRejected"  # the API server refuses a create (for now)
    POD_CREATION_REJECTED: Final = "PodCreationRejected"  # ...for longer than allowed
    # An object the job creates already exists and is owned by something else (another job's
    # uid, or nothing): waited for, then the job fails with it
    OBJECT_OWNED_BY_OTHER: Final = "ObjectOwnedByOther"
    OBJECTS_OWNED: Final = "ObjectsOwned"  # ...and no longer

    # Restarts (phase reasons, Events, attempt records)
    GANG_RESTART: Final = "GangRestart"
    PREEMPTED: Final = "Preempted"
    STALLED: Final = "Stalled"
    RESTARTED: Final = "Restarted"
    POD_DELETED: Final = "PodDeleted"  # a running pod vanished or was deleted
    DELETED: Final = "Deleted"  # an attempt ended by a deleted pod; the job deleted by TTL
    FAILED: Final = "Failed"  # an attempt ended by a failed rank
    OOM_KILLED: Final = "OOMKilled"  # the kubelet's container reason, passed on
    NODE_LOST: Final = "NodeLost"
    ERROR: Final = "Error"  # a failed pod that says nothing more

    # The end of a job
    COMPLETED: Final = "Completed"
    SUCCEEDED: Final = "Succeeded"
    RESTART_BUDGET_EXHAUSTED: Final = "RestartBudgetExhausted"
    PENDING_TIMEOUT: Final = "PendingTimeout"
    DEADLINE_EXCEEDED: Final = "DeadlineExceeded"
    INVALID_SPEC: Final = "InvalidSpec"

    # Suspend and resume
    SUSPENDED: Final = "Suspended"
    SUSPENDING: Final = "Suspending"
    CHECKPOINT_VERIFIED: Final = "CheckpointVerified"
    CHECKPOINT_MISSING: Final = "CheckpointMissing"
    SUSPEND_CHECKPOINT_SAVED: Final = "SuspendCheckpointSaved"
    SUSPEND_CHECKPOINT_FAILED: Final = "SuspendCheckpointFailed"
    RESUMED: Final = "Resumed"

    # Kueue (spec.scheduling.queueName)
    QUEUED: Final = "Queued"  # waiting in a LocalQueue for quota
    ADMITTED: Final = "Admitted"  # Kueue reserved the quota: the pods may run
    EVICTED_BY_QUEUE: Final = "EvictedByQueue"  # Event: Kueue took the quota back

    # Spec edits and hyperparameter search
    SPEC_CHANGE_IGNORED: Final = "SpecChangeIgnored"
    SPEC_MATCHES: Final = "SpecMatches"
    # The started spec (the <job>-job ConfigMap) no longer matches status.startedSpecDigest:
    # put back from the job's spec, or (when that changed too) the job fails
    STARTED_SPEC_RESTORED: Final = "StartedSpecRestored"
    STARTED_SPEC_CHANGED: Final = "StartedSpecChanged"
    OUTPUT_ADOPTED: Final = "OutputAdopted"  # Event: the trainer took over another job's output
    TRIAL_FINISHED: Final = "TrialFinished"

    # The export step of spec.output (policies/export.py), after training succeeded
    EXPORT_STARTED: Final = "ExportStarted"  # Event: an export pod was created (each try)
    EXPORT_RETRYING: Final = "ExportRetrying"  # Event: a try failed, another comes
    EXPORTED: Final = "Exported"  # Event: delivered (pushed, or ready without oci)
    PUSHED: Final = "Pushed"  # Exported True: in the registry
    DELIVERED: Final = "Delivered"  # Exported True: done without a push (no oci)
    QUALITY_GATE_NOT_MET: Final = "QualityGateNotMet"  # Exported False, and its Event
    EXPORT_FAILED: Final = "ExportFailed"  # Exported False (refused, tries spent), and Event


class EventType:
    """An Event's `type`."""

    NORMAL: Final = "Normal"
    WARNING: Final = "Warning"
