"""`dpo`: the DAG's adapter to model/'s DPO — align the upstream (normally `sft`) model.

Input: an `sft` (or `pretrain`, or another `dpo`) stage's committed `model/`: it is both the
starting policy and the frozen reference. Params: `preset` (a DPO YAML such as
configs/dpo.yaml), `data`, `train` and `dpo` (`beta`), model/'s DPO schema (`model/dpo.py`);
`dpo.reference` is not a param: the reference is the upstream model, which the cache key
covers. Inputs, config, cache key, scratch, commits and manifest info:
stages/training/posttrain.py; the info adds the last validation reward accuracy, reward
margin and chosen-minus-rejected log-probability margin.

Memory: the policy, its optimizer state, the reference model, one batch of pairs, and the
preference pairs (tokenized once).
"""

from __future__ import annotations

from typing import Any

from pydantic import model_validator

from stages.training.posttrain import PostTrainParams, PostTrainStage


class DPOParams(PostTrainParams):
    dpo: dict[str, Any] = {}  # beta (the reference is the upstream model)

    config_class = "model.dpo:DPOConfig"
    extra_sections = ("dpo",)

    @model_validator(mode="before")
    @classmethod
    def _reference_is_upstream(cls, data: Any) -> Any:
        if isinstance(data, dict) and "reference" in (data.get("dpo") or {}):
            raise ValueError("dpo.reference is set by the stage: the reference is the upstream model")
        return data

    def training_config(self, init_from: str, out_dir: str) -> Any:
        config = super().training_config(init_from, out_dir)
        config.dpo.reference = None  # a preset's reference, too, gives way to the upstream model
        return config


class DPO(PostTrainStage):
    kind = "dpo"
    Params = DPOParams
    trainer_class = "model.dpo:DPOTrainer"

    def summary(self, last_validation: dict[str, Any]) -> dict[str, Any]:
        return {f"final_{key}": last_validation.get(key)
                for key in ("val_reward_accuracy", "val_reward_margin", "val_logp_margin")}
