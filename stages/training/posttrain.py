"""What the `sft` and `dpo` stages share: post-train the upstream stage's committed model.

Input: exactly one upstream stage with a committed `model/` folder (model.safetensors,
model.json, tokenizer.json: a `pretrain`, `sft` or `dpo` stage); it is the starting
checkpoint. The config is model/'s own schema (`model/posttrain.py` and the kind's module):
its sections come from `preset` (a YAML such as configs/sft.yaml; its `init_from` is ignored)
overridden key by key by the params of the same name; the stage sets `init_from` and
`train.out_dir`. The whole config is validated when the pipeline config loads. The preset's
and the data files' content (`data.train_file`, `data.val_file`), not only their names, are
part of the cache key.

One task. Checkpoints go to `train/` in the stage directory (scratch that survives a killed
run, so a re-run resumes; on an object store mirrored by stages/training/scratch.py). When
training ends the stage commits `model/` (what `lmforge chat`, `generate`, `export-hf` and
the next post-training stage load) and `train_log.jsonl`; the manifest's task info holds
steps, parameters, examples, first/final training loss and first/final validation loss,
plus the kind's own figures.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar

from pydantic import model_validator

from pipeline.artifacts import commit_copy
from pipeline.stage import Counts, Params, Stage, StageInput, Task, TaskResult
from stages.training.presets import MODEL_FILES, load_preset, model_config
from stages.training.scratch import TrainingScratch, local_inputs, uploading


class PostTrainParams(Params):
    preset: str | None = None  # a post-training YAML whose sections are the base
    data: dict[str, Any] = {}  # train_file, val_file, val_fraction, seq_len, packing (sft), ...
    train: dict[str, Any] = {}

    # The model/ config class ("module:Class") and the sections besides data and train.
    config_class: ClassVar[str]
    extra_sections: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _valid_training_config(self) -> PostTrainParams:
        self.training_config(init_from="<upstream model>", out_dir="<stage>/train")
        return self

    def training_config(self, init_from: str, out_dir: str) -> Any:
        """model/'s config for these params; raises ValueError naming the bad key."""
        import importlib

        module, _, name = self.config_class.partition(":")
        base = load_preset(self.preset)
        sections = {s: {**base.get(s, {}), **getattr(self, s)} for s in ("data", "train", *self.extra_sections)}
        sections["train"]["out_dir"] = out_dir
        return model_config(getattr(importlib.import_module(module), name),
                            {"init_from": init_from, **sections}, name.removesuffix("Config").lower())


class PostTrainStage(Stage):
    """One post-training run; a kind sets `Params`, `trainer_class` and may add `summary`."""

    version = 1
    report_files = {"training_log": ("train_log.jsonl", "train/log.jsonl")}
    scratch_dirs = ("train",)
    trainer_class: ClassVar[str]  # "module:Class" of model/'s trainer

    def fingerprint(self) -> Any:
        config = self.params.training_config(init_from="-", out_dir="-")
        paths = [self.params.preset, config.data.train_file, config.data.val_file]
        return {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths if p is not None}

    def tasks(self, inputs: list[StageInput]) -> list[Task]:
        folder = lambda f: f.rsplit("/", 1)[0]  # noqa: E731 (local paths and URLs alike)
        models = sorted(folder(f) for inp in inputs for f in inp.files
                        if f.endswith("/model/model.safetensors"))
        if len(models) != 1:
            raise ValueError(f"stage '{self.name}': needs exactly one input stage with a committed model/ "
                             f"(a pretrain, sft or dpo stage); found: {models or 'none'}")
        files = [(f, inp.checksum(f)) for inp in inputs for f in inp.files if folder(f) == models[0]]
        return [Task(name=self.kind, inputs=tuple(f for f, _ in files),
                     payload=(("sha256", tuple(sha for _, sha in files)),))]

    def run_task(self, task: Task) -> TaskResult:
        import importlib

        module, _, name = self.trainer_class.partition(":")
        scratch = TrainingScratch(self.stage_dir)
        scratch.pull()
        init_from = local_inputs(task.inputs, task.get("sha256"))
        config = self.params.training_config(str(init_from), str(scratch.local))
        trainer = uploading(getattr(importlib.import_module(module), name), scratch)(config)
        try:
            trainer.train()
            checkpoint = trainer.save_checkpoint()  # the final state, even if already saved
        finally:
            trainer.close()
        files = [commit_copy(self.stage_dir, checkpoint / name, f"model/{name}") for name in MODEL_FILES]
        files.append(commit_copy(self.stage_dir, scratch.log, "train_log.jsonl"))
        records = [json.loads(line) for line in scratch.log.read_text().splitlines() if line.strip()]
        vals = [r for r in records if r.get("val_loss") is not None]
        info = {"steps": trainer.step, "parameters": trainer.num_params,
                "train_examples": trainer.example_counts["train"],
                "first_loss": records[0]["loss"] if records else None,
                "final_loss": records[-1]["loss"] if records else None,
                "first_val_loss": vals[0]["val_loss"] if vals else None,
                "final_val_loss": vals[-1]["val_loss"] if vals else None,
                **self.summary(vals[-1] if vals else {})}
        return TaskResult(files, Counts(), info=info)

    def summary(self, last_validation: dict[str, Any]) -> dict[str, Any]:
        """The kind's own figures for the manifest, from the last validation log record."""
        return {}
