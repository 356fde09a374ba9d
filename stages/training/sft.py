"""`sft`: the DAG's adapter to model/'s supervised fine-tuning — fine-tune the upstream model.

Input: a `pretrain` (or another `sft`) stage's committed `model/`. Params: `preset` (an SFT
YAML such as configs/sft.yaml), `data` and `train`, model/'s SFT schema (`model/sft.py`,
`model/posttrain.py`; `data.packing` packs examples into rows). Inputs, config, cache key,
scratch, commits and manifest info: stages/training/posttrain.py; the info adds nothing.

Memory: the model, its optimizer state, one batch, and the instruction examples (tokenized
once; instruction sets are small next to a pretraining corpus).
"""

from __future__ import annotations

from stages.training.posttrain import PostTrainParams, PostTrainStage


class SFTParams(PostTrainParams):
    config_class = "model.sft:SFTConfig"


class SFT(PostTrainStage):
    kind = "sft"
    Params = SFTParams
    trainer_class = "model.sft:SFTTrainer"
