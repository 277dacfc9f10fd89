"""The progress callback with a fake TrainerState and a recording reporter."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from ftjob_api import api
from ftjob_trainer import checkpoints
from ftjob_trainer.progress import ProgressCallback, build_progress, due
from transformers import TrainerControl, TrainerState


class Recorder:
    def __init__(self, fail=False):
        self.reports = []
        self.fail = fail

    def report(self, progress, checkpoint, final=False):
        if self.fail:
            raise RuntimeError("apiserver unreachable")
        self.reports.append((progress, checkpoint, final))

    def close(self):
        pass


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def make(tmp_path, interval=5.0, rank_zero=True, reporter=None):
    clock = Clock()
    reporter = reporter or Recorder()
    callback = ProgressCallback(reporter, interval, clock=clock, wall=lambda: 1.7e9)
    args = SimpleNamespace(output_dir=str(tmp_path), per_device_train_batch_size=4,
                           gradient_accumulation_steps=2, world_size=2)
    state = TrainerState(max_steps=100, is_world_process_zero=rank_zero)
    return callback, args, state, clock, reporter


def test_due_is_throttled_unless_forced():
    assert due(10.0, None, 5.0, False)
    assert not due(14.9, 10.0, 5.0, False)
    assert due(15.0, 10.0, 5.0, False)
    assert due(10.1, 10.0, 5.0, True)


def test_steps_are_reported_at_most_every_interval(tmp_path):
    callback, args, state, clock, rec = make(tmp_path)
    control = TrainerControl()
    callback.on_train_begin(args, state, control)
    for step in range(1, 21):
        clock.now += 1.0
        state.global_step = step
        callback.on_step_end(args, state, control)
    # begin and the attempt's first step (forced), then every 5 s of the fake clock
    assert [p["globalStep"] for p, _, _ in rec.reports] == [0, 1, 6, 11, 16]
    state.global_step = 21
    clock.now += 1.0  # 5 s after step 16's report
    callback.on_step_end(args, state, control)
    progress = rec.reports[-1][0]
    assert progress["samplesPerSecond"] == pytest.approx(16.0)  # 1 step/s x 4 x 2 x 2
    assert progress["etaSeconds"] == pytest.approx(79.0)
    assert progress["percent"] == 21.0
    assert progress["activity"] == "training" and progress["attempt"] == 0
    assert progress["lastStepTime"] == "2023-11-14T22:13:20Z"  # the fake wall clock
    api.Progress.model_validate(progress)  # exactly the API's field names


def test_save_eval_and_end_are_reported_at_once(tmp_path):
    callback, args, state, clock, rec = make(tmp_path)
    control = TrainerControl()
    callback.on_train_begin(args, state, control)
    state.global_step = 10
    folder = tmp_path / "checkpoint-10"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x")
    checkpoints.write_marker(folder, 10)
    callback.on_save(args, state, control)
    callback.on_log(args, state, control, logs={"loss": 0.5, "learning_rate": 1e-4})  # throttled
    callback.on_evaluate(args, state, control, metrics={"eval_loss": 0.4, "eval_accuracy": 0.9,
                                                        "epoch": 1.0, "note": "x"})
    callback.on_train_end(args, state, control)
    assert len(rec.reports) == 4
    progress, checkpoint, final = rec.reports[-1]
    assert final
    assert progress["evalMetrics"] == {"eval_loss": 0.4, "eval_accuracy": 0.9, "epoch": 1.0}
    assert progress["loss"] == 0.5 and progress["learningRate"] == 1e-4
    assert checkpoint["latest"]["step"] == 10 and checkpoint["latest"]["path"] == str(folder)
    assert checkpoint["resumedFromStep"] == 0
    api.CheckpointStatus.model_validate(checkpoint)


def test_an_unverified_save_is_not_reported_as_the_latest_checkpoint(tmp_path):
    callback, args, state, clock, rec = make(tmp_path)
    callback.on_train_begin(args, state, TrainerControl())
    state.global_step = 10
    (tmp_path / "checkpoint-10").mkdir()
    callback.on_save(args, state, TrainerControl())
    assert "latest" not in rec.reports[-1][1]


def test_resumed_run_reports_its_start_step(tmp_path):
    callback, args, state, clock, rec = make(tmp_path)
    state.global_step = 40
    callback.on_train_begin(args, state, TrainerControl())
    assert rec.reports[0][1] == {"resumedFromStep": 40}


def test_only_world_rank_zero_reports(tmp_path):
    callback, args, state, clock, rec = make(tmp_path, rank_zero=False)
    control = TrainerControl()
    callback.on_train_begin(args, state, control)
    callback.on_step_end(args, state, control)
    callback.on_evaluate(args, state, control, metrics={"eval_loss": 1.0})
    callback.on_train_end(args, state, control)
    assert rec.reports == []


def test_a_failing_reporter_never_stops_training(tmp_path, caplog):
    callback, args, state, clock, rec = make(tmp_path, reporter=Recorder(fail=True))
    callback.on_train_begin(args, state, TrainerControl())
    callback.on_train_end(args, state, TrainerControl())
    assert "progress reporter failed" in caplog.text


def test_build_progress_leaves_out_what_is_unknown():
    progress = build_progress(global_step=0, max_steps=10, epoch=None, loss=None,
                              learning_rate=None, start_step=0, elapsed=0.0, samples_per_step=8,
                              eval_metrics=None, now=0.0)
    assert progress == {"globalStep": 0, "maxSteps": 10, "percent": 0.0,
                        "updatedAt": "1970-01-01T00:00:00Z"}


def test_a_step_that_logs_is_reported_by_the_log_with_its_new_loss(tmp_path):
    callback, args, state, clock, rec = make(tmp_path)
    callback.on_train_begin(args, state, TrainerControl())
    clock.now += 10.0
    state.global_step = 10
    control = TrainerControl(should_log=True)  # set by DefaultFlowCallback before ours runs
    callback.on_step_end(args, state, control)
    callback.on_log(args, state, control, logs={"loss": 0.5, "learning_rate": 1e-4})
    reported = [(p["globalStep"], p.get("loss")) for p, _, _ in rec.reports]
    assert reported == [(0, None), (10, 0.5)]  # one report for step 10, with its loss


class Wall:
    def __init__(self):
        self.now = 1.7e9

    def __call__(self):
        return self.now


def test_loading_then_activity_follows_what_trainer_does_next(tmp_path):
    rec, wall = Recorder(), Wall()
    callback = ProgressCallback(rec, 5.0, clock=Clock(), wall=wall, attempt=2, heartbeat=0)
    callback.start()
    # The previous attempt's lastStepTime is deleted (null in a merge patch), not inherited.
    assert rec.reports[-1][0] == {"activity": "loading", "attempt": 2, "lastStepTime": None,
                                  "activitySince": "2023-11-14T22:13:20Z",
                                  "updatedAt": "2023-11-14T22:13:20Z"}
    args = SimpleNamespace(output_dir=str(tmp_path), per_device_train_batch_size=4,
                           gradient_accumulation_steps=1, world_size=1)
    state = TrainerState(max_steps=100, is_world_process_zero=True)
    state.global_step = 40  # resumed
    callback.on_train_begin(args, state, TrainerControl())
    assert rec.reports[-1][0]["activity"] == "training"
    assert rec.reports[-1][0]["lastStepTime"] is None  # no step of this attempt yet
    seen = []
    for control in (TrainerControl(should_evaluate=True), TrainerControl(should_save=True)):
        state.global_step += 1
        wall.now += 10
        callback.on_step_end(args, state, control)
        seen.append((rec.reports[-1][0]["activity"], rec.reports[-1][0]["lastStepTime"]))
        if control.should_evaluate:
            callback.on_evaluate(args, state, TrainerControl(), metrics={"eval_loss": 1.0})
            assert rec.reports[-1][0]["activity"] == "training"
    assert seen == [("evaluating", "2023-11-14T22:13:30Z"), ("saving", "2023-11-14T22:13:40Z")]
    wall.now += 100  # a long save
    callback.on_save(args, state, TrainerControl())
    assert rec.reports[-1][0]["activity"] == "training"
    assert rec.reports[-1][0]["activitySince"] == "2023-11-14T22:15:20Z"  # the save's end
    assert rec.reports[-1][0]["lastStepTime"] == "2023-11-14T22:13:40Z"
    api.Progress.model_validate(rec.reports[-1][0])
    callback.on_train_end(args, state, TrainerControl())
    callback.on_evaluate(args, state, TrainerControl(), metrics={"eval_loss": 0.5})
    assert rec.reports[-1][0]["activity"] == "evaluating"  # the final save follows


def test_heartbeat_refreshes_updated_at_but_not_the_step_time(tmp_path):
    callback, args, state, clock, rec = make(tmp_path)
    wall = Wall()
    callback.wall = wall
    callback.on_train_begin(args, state, TrainerControl())
    state.global_step = 1
    callback.on_step_end(args, state, TrainerControl())
    wall.now += 45  # one long step: no Trainer event for 45 s
    callback.beat()
    progress = rec.reports[-1][0]
    assert progress["globalStep"] == 1 and progress["activity"] == "training"
    assert progress["updatedAt"] == "2023-11-14T22:14:05Z"
    assert progress["lastStepTime"] == "2023-11-14T22:13:20Z"


def test_heartbeat_thread_writes_while_the_trainer_is_silent(tmp_path):
    from tests.polling import wait_for

    rec = Recorder()
    callback = ProgressCallback(rec, 5.0, attempt=1, heartbeat=0.05).start()
    try:
        wait_for(lambda: len(rec.reports) >= 3, 30, "heartbeats")
    finally:
        callback.close()
    assert all(p["activity"] == "loading" for p, _, _ in rec.reports)
    assert not callback._thread.is_alive()


def test_the_hang_hook_acts_only_in_test_mode():
    from ftjob_trainer import testing

    assert testing.hooks({"FTJOB_TEST_HANG_AT_STEP": "3"}) == []
    hook, = testing.hooks({"FTJOB_TEST_MODE": "1", "FTJOB_TEST_HANG_AT_STEP": "3",
                           "WORLD_SIZE": "2"})
    assert (hook.step, hook.rank) == (3, 1)


def saved(tmp_path, step):
    folder = tmp_path / f"checkpoint-{step}"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x")
    checkpoints.write_marker(folder, step)


def test_a_heartbeat_built_before_a_save_is_not_sent_after_it(tmp_path):
    """The heartbeat thread stops inside building its report (at its wall-clock read)
    while the training thread steps on and saves: the last report must be the save's."""
    import threading

    callback, args, state, clock, rec = make(tmp_path)
    callback.on_train_begin(args, state, TrainerControl())
    state.global_step = 10
    saved(tmp_path, 10)
    callback.on_save(args, state, TrainerControl())
    building, release = threading.Event(), threading.Event()

    def wall():
        if threading.current_thread().name == "heartbeat" and not building.is_set():
            building.set()
            release.wait(30)
        return 1.7e9

    callback.wall = wall
    heartbeat = threading.Thread(target=callback.beat, name="heartbeat")
    heartbeat.start()
    assert building.wait(30)

    def train_and_save():
        state.global_step = 20
        saved(tmp_path, 20)
        callback.on_save(args, state, TrainerControl())

    training = threading.Thread(target=train_and_save)
    training.start()
    training.join(1.0)  # the save waits for the heartbeat's report (or, unguarded, overtakes it)
    release.set()
    heartbeat.join(30)
    training.join(30)
    progress, checkpoint, _ = rec.reports[-1]
    assert progress["globalStep"] == 20
    assert checkpoint["latest"]["step"] == 20


def test_a_second_train_run_on_the_same_callback_follows_evaluations_again(tmp_path):
    """A hyperparameter search calls train() once per trial and once for the final run."""
    callback, args, state, clock, rec = make(tmp_path)
    for _ in range(2):
        callback.on_train_begin(args, state, TrainerControl())
        control = TrainerControl(should_save=True)
        callback.on_evaluate(args, state, control, metrics={"eval_loss": 0.5})
        assert callback.activity == "saving"  # the save after this evaluation comes next
        callback.on_train_end(args, state, TrainerControl())
        assert callback.activity == "evaluating"


def test_a_stop_request_reports_the_exact_step_and_its_checkpoint_at_once(tmp_path):
    """The operator's suspend check compares the last reported step with the checkpoint:
    both must be exact when the pod stops, however recent the throttled last report."""
    from ftjob_trainer.stopping import PreemptionCallback, StopRequest

    callback, args, state, clock, rec = make(tmp_path, interval=3600)
    request = StopRequest()
    preemption = PreemptionCallback(request, agree_fn=lambda local: local)
    callback.on_train_begin(args, state, TrainerControl())
    for step in (1, 2, 3):
        state.global_step = step
        control = TrainerControl()
        if step == 3:
            request._on_signal(15, None)  # SIGTERM during step 3
        for cb in (preemption, callback):  # the trainer's callback order
            cb.on_step_end(args, state, control)
    assert rec.reports[-1][0]["globalStep"] == 3  # at the stop's step end, not throttled
    assert control.should_save and control.should_training_stop
    saved(tmp_path, 3)
    callback.on_save(args, state, control)
    callback.on_train_end(args, state, control)
    for progress, checkpoint, _ in rec.reports[-2:]:
        assert progress["globalStep"] == 3 and checkpoint["latest"]["step"] == 3
