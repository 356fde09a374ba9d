"""`sft`: the DAG's adapter to model/'s supervised fine-tuning — fine-tune the upstream model.

Input: a `pretrain` (or another `sft`) stage, whose committed `model/` folder
(model.safetensors, model.json, tokenizer.json) is the starting checkpoint. The config is
model/'s own SFT schema (`model/sft.py`, `model/posttrain.py`): `data` and `train` sections
come from `preset` (an SFT YAML such as configs/sft.yaml; its `init_from` is ignored)
overridden key by key by the `data` / `train` params; the stage sets `init_from` and
`train.out_dir`. The whole config is validated when the pipeline config loads. The
instruction files (`data.train_file`, `data.val_file`) and the preset are part of the
cache key by content.

One task. Checkpoints go to `train/` in the stage directory (scratch that survives a killed
run, so a re-run resumes). When training ends the stage commits `model/` (what
`lmforge chat`, `generate`, `export-hf` and a DPO run's `init_from` load) and the training
log; the manifest's task info holds first/final training loss and first/last validation loss.

On a run directory on an object store it works like `pretrain` (stages/training/scratch.py).
Memory: the model, its optimizer state, one padded batch, and the instruction examples
(tokenized once; instruction sets are small next to a pretraining corpus).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import model_validator

from pipeline.artifacts import commit_copy
from pipeline.stage import Counts, Params, Stage, StageInput, Task, TaskResult
from stages.training.presets import MODEL_FILES, load_preset, model_config
from stages.training.scratch import TrainingScratch, local_inputs, uploading


class SFTParams(Params):
    preset: str | None = None  # an SFT YAML whose data/train sections are the base
    data: dict[str, Any] = {}  # train_file, val_file, val_fraction, seq_len, system_prompt, ...
    train: dict[str, Any] = {}

    @model_validator(mode="after")
    def _valid_sft_config(self) -> SFTParams:
        sft_config(self, init_from="<upstream model>", out_dir="<stage>/train")
        return self


def sft_config(params: SFTParams, init_from: str, out_dir: str):
    """model/'s SFTConfig for these params; raises ValueError naming the bad key."""
    from model.sft import SFTConfig

    base = load_preset(params.preset)
    return model_config(SFTConfig, {"init_from": init_from,
                                    "data": {**base.get("data", {}), **params.data},
                                    "train": {**base.get("train", {}), **params.train,
                                              "out_dir": out_dir}}, "sft")


class SFT(Stage):
    kind = "sft"
    version = 1
    Params = SFTParams
    scratch_dirs = ("train",)

    def fingerprint(self) -> Any:
        # The preset's and the data files' content, not only their names, decide the model.
        config = sft_config(self.params, init_from="-", out_dir="-")
        paths = [self.params.preset, config.data.train_file, config.data.val_file]
        return {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths if p is not None}

    def tasks(self, inputs: list[StageInput]) -> list[Task]:
        folder = lambda f: f.rsplit("/", 1)[0]  # noqa: E731 (local paths and URLs alike)
        models = sorted(folder(f) for inp in inputs for f in inp.files
                        if f.endswith("/model/model.safetensors"))
        if len(models) != 1:
            raise ValueError(f"stage '{self.name}': needs exactly one input stage with a committed model/ "
                             f"(a pretrain or sft stage); found: {models or 'none'}")
        files = [(f, inp.checksum(f)) for inp in inputs for f in inp.files if folder(f) == models[0]]
        return [Task(name="sft", inputs=tuple(f for f, _ in files),
                     payload=(("sha256", tuple(sha for _, sha in files)),))]

    def run_task(self, task: Task) -> TaskResult:
        from model.sft import SFTTrainer

        scratch = TrainingScratch(self.stage_dir)
        scratch.pull()
        init_from = local_inputs(task.inputs, task.get("sha256"))
        trainer = uploading(SFTTrainer, scratch)(sft_config(self.params, str(init_from), str(scratch.local)))
        try:
            trainer.train()
            checkpoint = trainer.save_checkpoint()  # the final state, even if already saved
        finally:
            trainer.close()
        files = [commit_copy(self.stage_dir, checkpoint / name, f"model/{name}") for name in MODEL_FILES]
        log = scratch.log
        files.append(commit_copy(self.stage_dir, log, "train_log.jsonl"))
        records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        vals = [r["val_loss"] for r in records if r.get("val_loss") is not None]
        info = {"steps": trainer.step, "parameters": trainer.num_params,
                "train_examples": len(trainer.train_data.examples),
                "first_loss": records[0]["loss"] if records else None,
                "final_loss": records[-1]["loss"] if records else None,
                "first_val_loss": vals[0] if vals else None, "final_val_loss": vals[-1] if vals else None}
        return TaskResult(files, Counts(), info=info)

