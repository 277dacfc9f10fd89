"""The training worker: one per torchrun process. Job spec -> model, data -> Trainer.train().

Run by the launcher as `torchrun ... -m ftjob_trainer.entrypoint`. Whatever happens, each
rank leaves a classified failure in $FTJOB_RESULT_DIR (torchrun itself only says "1"), and
world rank 0 leaves the result of a successful run there too.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftjob_api import api
from ftjob_api.contract import ExitCode, exit_reason, rfc3339

from . import exits
from .job import ENV_RESULT_DIR, ENV_STOP_FILE, JobContext, load_context, world_rank
from .output_owner import claim_output
from .stopping import StopRequest

log = logging.getLogger("ftjob_trainer")

FINAL_DIR = "final"
METRICS_FILE = "metrics.json"


@dataclass
class TrainingOutcome:
    """How one attempt's training ended, as `run` turns it into an exit code and result."""

    global_step: int
    resumed_from_step: int
    preempted: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)
    final_model: str | None = None
    stopped_early: str | None = None  # why training ended before max_steps
    search: dict[str, Any] | None = None  # status.search of a hyperparameter search


def main() -> None:
    sys.exit(run(os.environ))


def run(env) -> int:
    rank = world_rank()
    _setup_logging(rank)
    # SIGTERM is caught once training begins (PreemptionCallback.on_train_begin): until then
    # it ends the worker at once, as there is no step to save.
    stop = StopRequest(Path(env[ENV_STOP_FILE]) if env.get(ENV_STOP_FILE) else None)
    result_dir = env.get(ENV_RESULT_DIR)
    try:
        # Before anything reaches the output folder: it must be this job's (or adopted).
        ctx = claim_output(load_context(env), rank == 0)
        outcome = train(ctx, stop)
    except BaseException as exc:  # noqa: BLE001 - every failure must be classified
        failure = exits.classify_exception(exc, rank)
        if failure.exit_code == ExitCode.UNKNOWN:
            log.exception("rank %d failed", rank)
        else:
            log.error("rank %d failed: %s: %s", rank, failure.reason, failure.message)
        if result_dir:
            exits.write_failure(result_dir, failure)
        return failure.exit_code

    if outcome.preempted:
        failure = exits.RankFailure(
            int(ExitCode.PREEMPTED), exit_reason(ExitCode.PREEMPTED),
            f"stopped on request after saving checkpoint-{outcome.global_step}", rank,
            outcome.global_step)
        if result_dir:
            exits.write_failure(result_dir, failure)
        _finish()
        return int(ExitCode.PREEMPTED)

    if rank == 0 and result_dir:
        exits.write_json_atomic(Path(result_dir) / exits.RESULT_FILE, {
            "globalStep": outcome.global_step,
            "resumedFromStep": outcome.resumed_from_step,
            "metrics": exits.numeric_metrics(outcome.metrics),
            "finalModel": outcome.final_model,
            **({"stoppedEarly": outcome.stopped_early} if outcome.stopped_early else {}),
            **({"search": outcome.search} if outcome.search else {}),
        })
    _finish()
    return 0


def _setup_logging(rank: int) -> None:
    level = logging.INFO if rank == 0 else logging.WARNING
    logging.basicConfig(level=level, format=f"[rank{rank}] %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    import datasets
    import transformers

    # What loading says (the model's LOAD REPORT, tokenizer notes) is the same on every rank:
    # rank 0 says it once. Once built, the Trainer sets each process's level itself
    # (`log_level_replica`, warning by default).
    if rank == 0:
        transformers.logging.set_verbosity_warning()
    else:
        transformers.logging.set_verbosity_error()
    # One progress display per run (the reporter's); per-file save/load bars are log noise.
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    # datasets prints through a handler of its own and also passes each record on to the
    # root logger: without it, a record is printed once, with the rank.
    logging.getLogger("datasets").handlers.clear()


def _finish() -> None:
    """Barrier so no rank exits (and makes torchrun kill the others) while one still writes."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _join_deepspeed_comm(targs) -> None:
    """ZeRO-3 builds the model inside deepspeed.zero.Init, which reads the world size from
    deepspeed.comm; on CPU, TrainingArguments started only torch.distributed, so wrap it."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        import deepspeed

        deepspeed.init_distributed(dist_backend=dist.get_backend())


@dataclass
class Prepared:
    """Everything Trainer needs, built in the order reproducibility demands."""

    targs: Any
    save_total_limit: int | None
    tokenizer: Any
    model: Any
    splits: Any  # tokenized data.Splits
    labels: Any  # data.Labels for classification, else None
    model_init: Any = None  # () -> a fresh pretrained model


def _training_arguments(ctx: JobContext) -> tuple[Any, int | None]:
    """TrainingArguments (spec.trainingArguments + ftjob's defaults, logged) and the
    checkpoint limit ftjob enforces itself; joins DeepSpeed's communicator if used."""
    from . import trainer_arguments as targuments

    spec = ctx.spec
    on_gpu = spec.resources.gpus_per_node > 0
    if spec.deepspeed is not None and not on_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    ds_config = (targuments.deepspeed_config(spec.deepspeed, on_gpu, ctx.deepspeed_config)
                 if spec.deepspeed is not None else None)
    bf16_supported = on_gpu and targuments.gpu_supports_bf16()
    quiet = ctx.reporter == "console"
    targs, save_total_limit = targuments.build(spec, ctx.output_dir, quiet_console=quiet,
                                               bf16_supported=bf16_supported,
                                               deepspeed=ds_config)
    for key, (value, why) in targuments.defaults(spec, quiet_console=quiet,
                                                 bf16_supported=bf16_supported).items():
        log.info("ftjob default %s=%s (%s; set it in spec.trainingArguments to change it)",
                 key, value, why)
    if ds_config is not None:
        _join_deepspeed_comm(targs)
    return targs, save_total_limit


def prepare(ctx: JobContext) -> Prepared:
    from transformers import set_seed

    from . import data, modeling, trainer_arguments

    spec = ctx.spec
    targs, save_total_limit = _training_arguments(ctx)
    ctx.output_dir.mkdir(parents=True, exist_ok=True)

    splits, labels = data.load_checked(
        spec, first=lambda: targs.main_process_first(local=False, desc="load data"))
    field_name = modeling.model_field(spec)
    source, kwargs = modeling.model_source(spec)
    tokenizer = modeling.tokenizer_for(spec)
    set_seed(targs.seed)  # before the model: a fresh head is initialised from this seed
    model = modeling.load_model(spec.task, source, kwargs, field_name, tokenizer,
                                labels.id2label if labels else None)
    log.info("attention implementation: %s",
             getattr(model.config, "_attn_implementation", None) or "the model's own")
    divides = modeling.loss_divides_by_item_count(model)
    targs.average_tokens_across_devices = trainer_arguments.average_tokens_across_devices(
        spec, divides)
    log.info("average_tokens_across_devices=%s (%s)", targs.average_tokens_across_devices,
             trainer_arguments.average_tokens_reason(spec, type(model).__name__, divides))
    if spec.hyperparameter_search is not None and spec.task != api.Task.SEQ2SEQ.value:
        # Every trial and the final run load their own (model_init); kept, this one would sit
        # in memory through the whole search. Seq2seq keeps it: DataCollatorForSeq2Seq builds
        # decoder_input_ids with it.
        model = None
    elif spec.peft is not None and spec.task != api.Task.PREFERENCE.value:
        model = modeling.add_lora(model, spec.task, spec.peft)  # DPOTrainer wraps its own
    if spec.task == api.Task.PREFERENCE.value:
        targs.max_length = data.token_limits(spec, tokenizer)[0]  # clamped to the model's

    def model_init():
        """The pretrained model again (hyperparameter search: every trial starts from it;
        Trainer seeds before calling this, so the fresh head is the same each time)."""
        fresh = modeling.load_model(spec.task, source, kwargs, field_name, tokenizer,
                                    labels.id2label if labels else None)
        return modeling.add_lora(fresh, spec.task, spec.peft) if spec.peft is not None else fresh

    tokenized = data.tokenize(splits, spec, tokenizer, labels,
                              first=lambda: targs.main_process_first(local=False, desc="tokenize"))
    return Prepared(targs, save_total_limit, tokenizer, model, tokenized, labels, model_init)


def train(ctx: JobContext, stop: StopRequest) -> TrainingOutcome:
    from .progress import ProgressCallback
    from .progress_reporters import NullReporter, build_reporter

    # World rank 0 reports from the start, so that loading (data, model, the checkpoint)
    # shows as such and the heartbeat covers it.
    reporter = (build_reporter(ctx.reporter, name=ctx.name, namespace=ctx.namespace,
                               metrics_port=ctx.metrics_port) if world_rank() == 0
                else NullReporter())
    progress = ProgressCallback(reporter, ctx.progress_interval, attempt=ctx.attempt,
                                adopted_from=ctx.adopted_from_job_uid)
    if world_rank() == 0:
        progress.start()
    try:
        return _train(ctx, stop, reporter, progress)
    finally:
        progress.close()
        reporter.close()


def _train(ctx: JobContext, stop: StopRequest, reporter: Any, progress: Any) -> TrainingOutcome:
    """One attempt as named steps: prepare, find the checkpoint to resume from, check it,
    record the attempt, build the callbacks, search (if asked), train, evaluate and save."""
    p = prepare(ctx)
    is_zero = p.targs.process_index == 0
    resume = _find_resume(ctx, p, is_zero)
    _check_labels(resume, p)
    resumed_from = resume.step if resume else 0
    if is_zero:
        _record_attempt(ctx, p, resumed_from)
    preemption, early, callbacks = _callbacks(ctx, p, stop, progress, resume)
    make_trainer = _trainer_factory(ctx, p, callbacks)

    search_status = None
    if ctx.spec.hyperparameter_search is not None:
        from .search import SearchStopped

        try:
            search_status = _search_and_apply_best(ctx, p, make_trainer, preemption, reporter,
                                                   is_zero)
        except SearchStopped as stopped:
            log.warning("%s", stopped)
            return TrainingOutcome(stopped.global_step, resumed_from, preempted=True)
    trainer = make_trainer(_trainer_class(ctx.spec.task), p.targs)
    train_metrics = _train_to_max_steps(trainer, resume)
    # A stop that lands on the last step still finishes: only evaluation is left.
    if preemption.stopped_at is not None and trainer.state.global_step < trainer.state.max_steps:
        return TrainingOutcome(trainer.state.global_step, resumed_from, preempted=True)
    stopped_early = _early_stop_message(early, trainer, p)
    final_metrics = evaluate_and_save(ctx, trainer, p, train_metrics, resumed_from)
    return TrainingOutcome(trainer.state.global_step, resumed_from, metrics=final_metrics,
                           final_model=str(ctx.output_dir / FINAL_DIR),
                           stopped_early=stopped_early, search=search_status)


def _train_to_max_steps(trainer: Any, resume: Any) -> dict[str, Any]:
    """trainer.train() from the checkpoint (if any); the train metrics. A checkpoint at
    max_steps already (the run was stopped after its last step) trains nothing more."""
    from .callbacks import NothingLeftToTrain, StopAtMaxSteps

    trainer.add_callback(StopAtMaxSteps())
    try:
        return dict(trainer.train(resume_from_checkpoint=str(resume.path) if resume else None
                                  ).metrics)
    except NothingLeftToTrain as done:
        log.info("%s: nothing left to train, evaluating and saving", done)
        # What Trainer.train() does after its last step, which the exception skipped: the
        # best checkpoint back (load_best_model_at_end), and the callbacks told training ended.
        if trainer.args.load_best_model_at_end and trainer.state.best_model_checkpoint:
            trainer._load_best_model()
        trainer.control = trainer.callback_handler.on_train_end(trainer.args, trainer.state,
                                                                trainer.control)
        trainer.is_in_train = False
        return {}


def _find_resume(ctx: JobContext, p: Prepared, is_zero: bool) -> Any:
    """The newest complete checkpoint (rank 0 first sets incomplete ones aside), or None."""
    from . import checkpoints

    with p.targs.main_process_first(local=False, desc="find checkpoint"):
        return (checkpoints.prepare_resume(ctx.output_dir) if is_zero
                else checkpoints.latest_complete(ctx.output_dir))


def _check_labels(resume: Any, p: Prepared) -> None:
    """Another label count is a size mismatch in the classifier head on every attempt:
    permanent, and said in words instead of load_state_dict's."""
    from . import checkpoints

    mismatch = resume and p.labels and checkpoints.label_mismatch(resume, p.labels.id2label)
    if mismatch:
        raise exits.InvalidData(mismatch)


def _record_attempt(ctx: JobContext, p: Prepared, resumed_from: int) -> None:
    from .attempts import record_attempt

    record_attempt(ctx.output_dir, resumed_from, p.targs.world_size, rfc3339(time.time()))


def _callbacks(ctx: JobContext, p: Prepared, stop: StopRequest, progress: Any,
               resume: Any) -> tuple[Any, Any, list[Any]]:
    """(the preemption callback, the early-stopping one or None, every callback in order)."""
    from . import early_stopping, testing
    from .callbacks import CheckpointMarkerCallback
    from .stopping import PreemptionCallback

    result_dir = os.environ.get(ENV_RESULT_DIR)
    preemption = PreemptionCallback(stop, result_dir=Path(result_dir) if result_dir else None)
    callbacks = [CheckpointMarkerCallback(p.save_total_limit), preemption, progress,
                 *testing.hooks(os.environ)]
    early = None
    if ctx.spec.early_stopping is not None:
        early = early_stopping.build(ctx.spec.early_stopping, resume.path if resume else None)
        callbacks.append(early)
    return preemption, early, callbacks
def _trainer_class(task: str) -> Any:
    from transformers import Seq2SeqTrainer, Trainer

    if task == api.Task.PREFERENCE.value:
        from .preference import trainer_class

        return trainer_class()
    return Seq2SeqTrainer if task == api.Task.SEQ2SEQ.value else Trainer


def _task_kwargs(ctx: JobContext, p: Prepared) -> dict[str, Any]:
    """The Trainer arguments that differ by task: DPOTrainer builds its own collator and
    metrics, takes no model_init and wraps the model in LoRA itself (its reference is then
    the model with the adapter disabled)."""
    from . import data, metrics, modeling

    spec = ctx.spec
    if spec.task == api.Task.PREFERENCE.value:
        if spec.peft is not None:
            return {"model": p.model, "peft_config": modeling.lora_config(spec.task, spec.peft)}
        # The frozen reference, loaded as the policy was (TRL's own would drop a revision);
        # with precomputed reference log-probs TRL scores with the policy before training.
        ref = None if p.targs.precompute_ref_log_probs else modeling.load_model(
            spec.task, *modeling.model_source(spec), modeling.model_field(spec), p.tokenizer)
        return {"model": p.model, "ref_model": ref}
    search = spec.hyperparameter_search is not None
    return {
        # A search starts every trial and the final run from the pretrained weights
        # (Trainer takes a model or a model_init, not both).
        "model": None if search else p.model,
        "model_init": p.model_init if search else None,
        "data_collator": data.collator(spec.task, p.tokenizer, p.model, spec.dataset),
        "compute_metrics": (metrics.classification_metrics(len(p.labels.names)) if p.labels
                            else None),
    }


def _trainer_factory(ctx: JobContext, p: Prepared, callbacks: list[Any]):
    """(Trainer class, TrainingArguments) -> a Trainer on the prepared model and data."""
    from transformers import PrinterCallback

    def make_trainer(cls, args):
        try:
            trainer = cls(args=args, train_dataset=p.splits.train, eval_dataset=p.splits.eval,
                          processing_class=p.tokenizer, callbacks=callbacks,
                          **_task_kwargs(ctx, p))
        except ValueError as exc:
            if ctx.spec.task != api.Task.PREFERENCE.value:
                raise
            raise _preference_refusal(exc) from exc
        if ctx.reporter == "console":
            trainer.remove_callback(PrinterCallback)
        return trainer

    return make_trainer


def _preference_refusal(exc: ValueError) -> Exception:
    """DPOTrainer refuses combinations at start (LoRA modules, loss settings): permanent."""
    text = str(exc).splitlines()[0][:400] if str(exc) else type(exc).__name__
    if "target module" in text.lower() or "lm_head" in text:
        return exits.InvalidSpec(f"spec.peft.targetModules: {text}")
    return exits.InvalidSpec(f"spec.trainingArguments: {text}")


def _search_and_apply_best(ctx: JobContext, p: Prepared, make_trainer, preemption, reporter,
                           is_zero: bool) -> dict[str, Any]:
    """Run the search, set the best trial's parameters on the final run's arguments and
    return status.search."""
    best = _search(ctx, p, make_trainer, preemption, reporter, is_zero)
    for key, value in best.params.items():
        setattr(p.targs, key, value)
    return best.status


def _early_stop_message(early: Any, trainer: Any, p: Prepared) -> str | None:
    """Why early stopping ended the run before max_steps (logged), or None."""
    from . import early_stopping

    if early is None:
        return None
    state = trainer.state
    stopped_early = early_stopping.stop_message(
        counter=early.early_stopping_patience_counter,
        patience=early.early_stopping_patience,
        threshold=early.early_stopping_threshold, global_step=state.global_step,
        max_steps=state.max_steps, metric=p.targs.metric_for_best_model,
        best_metric=state.best_metric, best_checkpoint=state.best_model_checkpoint)
    if stopped_early:
        log.info("%s", stopped_early)
    return stopped_early


def _search(ctx: JobContext, p: Prepared, make_trainer, preemption, reporter,
            is_zero: bool) -> Any:
    """Run spec.hyperparameterSearch's remaining trials and return the best (params and
    status; search.SearchStopped when a stop request ended a trial: its checkpoint is kept
    for the next attempt)."""
    import copy

    from . import search, search_trials

    cls = search_trials.search_trainer(_trainer_class(ctx.spec.task))
    # The trials change their arguments; the final run starts from the spec's own.
    trainer = make_trainer(cls, copy.deepcopy(p.targs))
    trainer.hooks = search_trials.Hooks(
        root=ctx.output_dir, space=ctx.spec.hyperparameter_search.space, is_zero=is_zero,
        stopped=lambda: preemption.stopped_at, on_trial_start=lambda trial: None)
    return search.run(output_dir=ctx.output_dir, search=ctx.spec.hyperparameter_search,
                      trainer=trainer, is_zero=is_zero, reporter=reporter)


def evaluate_and_save(ctx: JobContext, trainer: Any, p: Prepared, train_metrics: dict[str, Any],
                      resumed_from: int) -> dict[str, Any]:
    """Eval split, test split, Hugging Face's result files, `<output>/final`, `metrics.json`.

    As the Hugging Face example scripts (run_glue, run_clm) do: `train_results.json`,
    `eval_results.json`, `test_results.json`, their union `all_results.json` and
    `trainer_state.json` in the output folder, and the metrics logged (world rank 0 only:
    Trainer's save_* and log_metrics check that themselves).
    """
    from . import metrics

    results = {"train": {**train_metrics, "train_samples": len(p.splits.train)}}
    if p.splits.eval is not None:
        results["eval"] = {**trainer.evaluate(), "eval_samples": len(p.splits.eval)}
    if p.splits.test is not None:
        # DPOTrainer scores pairs in evaluate (which tokenizes the split); predict would not.
        scored = (trainer.evaluate(p.splits.test, metric_key_prefix="test")
                  if ctx.spec.task == api.Task.PREFERENCE.value
                  else trainer.predict(p.splits.test, metric_key_prefix="test").metrics)
        results["test"] = {**scored, "test_samples": len(p.splits.test)}
    final_metrics: dict[str, Any] = {}
    for split, values in results.items():
        if ctx.spec.task == api.Task.CAUSAL_LM.value and split != "train":
            metrics.with_perplexity(values, split)
        trainer.log_metrics(split, values)
        trainer.save_metrics(split, values)
        final_metrics.update(values)
    trainer.save_state()

    final_dir = ctx.output_dir / FINAL_DIR
    trainer.save_model(str(final_dir))  # every rank: DeepSpeed gathers ZeRO-3 shards here
    if trainer.is_world_process_zero():
        if p.labels is not None:
            (final_dir / "labels.json").write_text(json.dumps(p.labels.names))
        (ctx.output_dir / METRICS_FILE).write_text(
            json.dumps({"globalStep": trainer.state.global_step, "resumedFromStep": resumed_from,
                        "metrics": final_metrics}, indent=1, sort_keys=True, default=str))
    return final_metrics


if __name__ == "__main__":
    main()
