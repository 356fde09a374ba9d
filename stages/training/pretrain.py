"""`pretrain`: the DAG's adapter to model/ — train on the upstream token shards.

Input: a `tokenize` stage, whose `shards/` folder (train-*.bin, val-*.bin, tokenizer.json)
is exactly what `model.data` reads. The training config is model/'s own schema
(`model/config.py`): `model` and `train` sections come from `preset` (a training YAML such as
configs/tiny.yaml; its `data` section is ignored) overridden key by key by the `model` /
`train` params; `data` params may set `seq_len`, `sampling` and `on_exhausted`, and the
stage points `dir` at the token shards. The whole config is validated when the pipeline
config loads.

A data mixture (`model/mixture.py`): several `tokenize` inputs, and `mixture` gives each a
weight, keyed by input stage name, either a number or `{weight, max_epochs}`:

    inputs: [web_tokens, bible_tokens]
    params:
      mixture: {web_tokens: 0.7, bible_tokens: {weight: 0.3, max_epochs: 2}}
      data: {on_exhausted: drop}     # a source at its limit leaves; the rest renormalise

Every input with token shards needs a weight and every weight an input (checked when the
stage starts, naming the key); the sources must share one tokenizer (checked when the
trainer loads them, naming the source).

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
from typing import Annotated, Any

from pydantic import Field, WithJsonSchema, field_validator, model_validator

from pipeline.artifacts import commit_artifact, commit_copy, tmp_path_for
from pipeline.stage import Counts, Params, Stage, StageInput, Task, TaskResult
from stages.training.presets import MODEL_FILES, load_preset, model_config
from stages.training.scratch import TrainingScratch, local_inputs, uploading


class MixtureWeight(Params):
    weight: float = Field(gt=0)  # relative; normalised over the mixture
    max_epochs: float | None = Field(default=None, gt=0)  # None: no limit


_POSITIVE = {"type": "number", "exclusiveMinimum": 0}
# What the YAML may say (a weight alone is the shorthand), for `lmforge schema`.
_MIXTURE_SCHEMA = {"type": "object", "additionalProperties": {"anyOf": [_POSITIVE, {
    "type": "object", "additionalProperties": False, "required": ["weight"],
    "properties": {"weight": _POSITIVE, "max_epochs": {"anyOf": [_POSITIVE, {"type": "null"}]}}}]}}


class PretrainParams(Params):
    preset: str | None = None  # a training YAML whose model/train sections are the base
    model: dict[str, Any] = {}
    data: dict[str, Any] = {}  # seq_len, sampling, on_exhausted
    # input stage name -> weight (a number, or {weight, max_epochs}); several tokenize inputs
    mixture: Annotated[dict[str, MixtureWeight], WithJsonSchema(_MIXTURE_SCHEMA)] = {}
    train: dict[str, Any] = {}
    sample_prompt: str = "The"
    sample_tokens: int = Field(default=64, ge=0)
    sample_temperature: float = Field(default=0.8, ge=0.0)
    sample_top_k: int | None = 50

    @field_validator("mixture", mode="before")
    @classmethod
    def _weight_shorthand(cls, value: Any) -> Any:
        if isinstance(value, dict):  # `web: 0.7` is `web: {weight: 0.7}`
            return {k: {"weight": v} if isinstance(v, (int, float)) and not isinstance(v, bool) else v
                    for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _valid_training_config(self) -> PretrainParams:
        if {"dir", "text_files", "mixture"} & set(self.data):
            raise ValueError("data.dir, data.text_files and data.mixture are set by the stage (the token shards "
                             "of its inputs; several inputs: params.mixture)")
        training_config(self, {name: f"<{name} token shards>" for name in self.mixture} or "<token shards>",
                        out_dir="<stage>/train")
        return self


def training_config(params: PretrainParams, data: str | dict[str, str], out_dir: str):
    """model/'s PretrainConfig for these params, reading the token shards in folder `data`, or,
    with a mixture, in `data[input name]`; raises ValueError naming the bad key."""
    from model.config import PretrainConfig

    base = load_preset(params.preset)
    if params.mixture:
        assert isinstance(data, dict)
        where = {"mixture": {name: {"dir": data[name], "weight": w.weight, "max_epochs": w.max_epochs}
                             for name, w in params.mixture.items()}}
    else:
        where = {"dir": data}
    return model_config(PretrainConfig, {
        "model": {**base.get("model", {}), **params.model},
        "data": {**{k: v for k, v in base.get("data", {}).items() if k in ("seq_len", "sampling", "on_exhausted")},
                 **params.data, **where},
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
        sources = {}  # input name -> its token-shard folder's files, with their sha256
        for inp in inputs:
            dirs = {folder(s) for s in inp.shards if s.endswith(".bin")}
            if len(dirs) > 1:
                raise ValueError(f"stage '{self.name}': input '{inp.name}' has token shards in several folders "
                                 f"({sorted(dirs)})")
            if dirs:
                shards = dirs.pop()
                sources[inp.name] = tuple((f, inp.checksum(f)) for f in inp.shards if folder(f) == shards)
        names = ", ".join(inp.name for inp in inputs) or "none"
        if not self.params.mixture and len(sources) != 1:
            raise ValueError(f"stage '{self.name}': needs exactly one tokenize stage as input, or params.mixture "
                             f"with a weight for each of several (inputs with token shards: "
                             f"{', '.join(sources) or 'none'})")
        for name in self.params.mixture:
            if name not in sources:
                raise ValueError(f"stage '{self.name}': params.mixture: '{name}' is not an input with token "
                                 f"shards (inputs: {names})")
        if self.params.mixture and (unweighted := [n for n in sources if n not in self.params.mixture]):
            raise ValueError(f"stage '{self.name}': input '{unweighted[0]}' has token shards but no weight in "
                             f"params.mixture")
        files = [f for group in sources.values() for f in group]
        return [Task(name="train", inputs=tuple(f for f, _ in files),
                     payload=(("sha256", tuple(sha for _, sha in files)),
                              ("sources", tuple((name, len(group)) for name, group in sources.items()))))]

    def run_task(self, task: Task) -> TaskResult:
        from model.trainer import Trainer

        scratch = TrainingScratch(self.stage_dir)
        scratch.pull()
        dirs, start = {}, 0
        for name, count in task.get("sources"):  # each input's files, in task.inputs order
            end = start + count
            dirs[name] = str(local_inputs(task.inputs[start:end], task.get("sha256")[start:end]))
            start = end
        data = dirs if self.params.mixture else dirs.popitem()[1]
        config = training_config(self.params, data, str(scratch.local))
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
    mixture = [r["mixture"] for r in records if "mixture" in r]
    ended = [r["data_end"] for r in records if "data_end" in r]
    return {
        "steps": records[-1]["step"] if records else 0,
        "first_loss": records[0]["loss"] if records else None,
        "final_loss": records[-1]["loss"] if records else None,
        "best_val_loss": min(vals) if vals else None,
        **({"mixture": mixture[-1]} if mixture else {}),
        **({"data_end": ended[-1]} if ended else {}),
    }
