"""`pretrain`: the DAG's adapter to model/ — train on the upstream token shards.

Input: a `tokenize` stage, whose `shards/` folder (train-*.bin, val-*.bin, tokenizer.json)
is exactly what `model.data` reads. The training config is model/'s own schema
(`model/config.py`): `model` and `train` sections come from `preset` (a training YAML such as
configs/tiny.yaml; its `data` section is ignored) overridden key by key by the `model` /
`train` params; `data` params may set `seq_len` and `sampling`, and the stage points `dir`
at the token shards. The whole config is validated when the pipeline config loads.

One task. Checkpoints go to `train/` in the stage directory, a scratch folder that survives
a killed run, so a re-run resumes from the newest complete checkpoint instead of starting
over. When training ends the stage commits `model/` (model.safetensors, model.json,
tokenizer.json: what `lmforge generate`, `export-hf` and post-training load), the training
log, and a sampled continuation of `sample_prompt` (fixed seed) in `sample.txt`.

On a run directory on an object store the trainer works in a local folder mirrored to
`train/` (stages/training/scratch.py): token shards fetched once and checked against the
manifest, each checkpoint uploaded as it is written. Memory: the model, its optimizer state
and one batch; token shards are memory-mapped, never read whole.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from pipeline.artifacts import commit_artifact, commit_copy, tmp_path_for
from pipeline.stage import Counts, Params, Stage, StageInput, Task, TaskResult
from stages.training.presets import MODEL_FILES, load_preset, model_config
from stages.training.scratch import TrainingScratch, local_inputs, uploading


class PretrainParams(Params):
    preset: str | None = None  # a training YAML whose model/train sections are the base
    model: dict[str, Any] = {}
    data: dict[str, Any] = {}  # seq_len, sampling
    train: dict[str, Any] = {}
    sample_prompt: str = "The"
    sample_tokens: int = Field(default=64, ge=0)
    sample_temperature: float = Field(default=0.8, ge=0.0)
    sample_top_k: int | None = 50

    @model_validator(mode="after")
    def _valid_training_config(self) -> PretrainParams:
        if "dir" in self.data or "text_files" in self.data:
            raise ValueError("data.dir and data.text_files are set by the stage (the token shards)")
        training_config(self, data_dir="<token shards>", out_dir="<stage>/train")
        return self


def training_config(params: PretrainParams, data_dir: str, out_dir: str):
    """model/'s PretrainConfig for these params; raises ValueError naming the bad key."""
    from model.config import PretrainConfig

    base = load_preset(params.preset)
    return model_config(PretrainConfig, {
        "model": {**base.get("model", {}), **params.model},
        "data": {**{k: v for k, v in base.get("data", {}).items() if k in ("seq_len", "sampling")},
                 **params.data, "dir": data_dir},
        "train": {**base.get("train", {}), **params.train, "out_dir": out_dir},
    }, "pretrain")


class Pretrain(Stage):
    kind = "pretrain"
    version = 1
    report_files = {"training_log": ("train_log.jsonl", "train/log.jsonl"), "sample": ("sample.txt",)}
    Params = PretrainParams
    needs_documents = True  # an upstream stage that kept nothing fails it
    scratch_dirs = ("train",)

    def fingerprint(self) -> Any:
        # The preset's content, not only its name, decides the model.
        if self.params.preset is None:
            return None
        return hashlib.sha256(Path(self.params.preset).read_bytes()).hexdigest()

    def tasks(self, inputs: list[StageInput]) -> list[Task]:
        folder = lambda f: f.rsplit("/", 1)[0]  # noqa: E731 (local paths and URLs alike)
        dirs = {folder(s) for inp in inputs for s in inp.shards if s.endswith(".bin")}
        if len(dirs) != 1:
            raise ValueError(f"stage '{self.name}': needs exactly one tokenize stage as input "
                             f"(token shards found in: {sorted(dirs) or 'none'})")
        shards = dirs.pop()
        files = [(f, inp.checksum(f)) for inp in inputs for f in inp.shards if folder(f) == shards]
        return [Task(name="train", inputs=tuple(f for f, _ in files),
                     payload=(("sha256", tuple(sha for _, sha in files)),))]

    def run_task(self, task: Task) -> TaskResult:
        from model.trainer import Trainer

        scratch = TrainingScratch(self.stage_dir)
        scratch.pull()
        data_dir = local_inputs(task.inputs, task.get("sha256"))
        config = training_config(self.params, str(data_dir), str(scratch.local))
        trainer = uploading(Trainer, scratch)(config)
        try:
            trainer.train()
            checkpoint = trainer.save_checkpoint()  # the final state, even if already saved
        finally:
            trainer.close()
        files = [commit_copy(self.stage_dir, checkpoint / name, f"model/{name}")
                 for name in MODEL_FILES if (checkpoint / name).exists()]
        files.append(commit_copy(self.stage_dir, scratch.log, "train_log.jsonl"))
        sample = self._sample(checkpoint) if self.params.sample_tokens else ""
        tmp = tmp_path_for(self.stage_dir / "sample.txt")
        tmp.write_text(self.params.sample_prompt + sample + "\n")
        files.append(commit_artifact(self.stage_dir, tmp, self.stage_dir / "sample.txt"))
        info = _summary(scratch.log)
        info.update(parameters=trainer.num_params, sample=self.params.sample_prompt + sample)
        return TaskResult(files, Counts(), info=info)

    def _sample(self, model_dir: Path) -> str:
        from tokenizers import Tokenizer

        from model.checkpoint import load_model
        from model.generate import continuation, encode_prompt
        from model.special_tokens import EOS

        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        ids = continuation(load_model(model_dir), encode_prompt(tokenizer, self.params.sample_prompt),
                           self.params.sample_tokens, self.params.sample_temperature, self.params.sample_top_k,
                           stop_ids=[tokenizer.token_to_id(EOS)], seed=0)
        return tokenizer.decode(list(ids))


def _summary(log_path: Path) -> dict[str, Any]:
    import json

    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    vals = [r["val_loss"] for r in records if r.get("val_loss") is not None]
    return {
        "steps": records[-1]["step"] if records else 0,
        "first_loss": records[0]["loss"] if records else None,
        "final_loss": records[-1]["loss"] if records else None,
        "best_val_loss": min(vals) if vals else None,
    }
