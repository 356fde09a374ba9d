"""Data mixtures: realised proportions, determinism, exact resume, epoch limits, one vocabulary."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model.config import DataConfig, MixtureSource, TrainConfigError, load_pretrain_config
from model.data import ShardDataset
from model.mixture import MixtureDataset, Source, describe_mixture
from model.token_shards import TokenShardError, write_token_shard
from model.trainer import Trainer

from .conftest import tiny_run_config
from .test_trainer import HostReads, read_log

VOCAB = 96
# Each source writes ids from its own band, so every row tells which source it came from.
BANDS = {"web": (0, 32), "books": (32, 64), "code": (64, 96)}


def write_band(directory, band: tuple[int, int], docs: int = 4, doc_len: int = 400, seed: int = 0,
               vocab_size: int = VOCAB, tokenizer_sha256: str | None = None):
    """train-00000/00001.bin and val-00000.bin whose ids all lie in ``band`` (a ramp, easy to learn)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    low, high = band

    def doc() -> np.ndarray:
        return low + (rng.integers(0, high - low) + np.arange(doc_len)) % (high - low)

    for i in range(2):
        write_token_shard(directory / f"train-{i:05d}.bin", [doc() for _ in range(docs)], vocab_size,
                          tokenizer_sha256)
    write_token_shard(directory / "val-00000.bin", [doc() for _ in range(2)], vocab_size, tokenizer_sha256)
    return directory


def sources(tmp_path, weights: dict[str, float], max_epochs: dict[str, float] | None = None,
            docs: dict[str, int] | None = None) -> list[Source]:
    return [Source(name, write_band(tmp_path / name, BANDS[name], docs=(docs or {}).get(name, 4)), weight,
                   (max_epochs or {}).get(name)) for name, weight in weights.items()]


def source_of_rows(x: torch.Tensor) -> list[str]:
    found = []
    for row in x:
        [name] = [n for n, (low, high) in BANDS.items() if low <= int(row.min()) and int(row.max()) < high]
        found.append(name)
    return found


@pytest.mark.parametrize("sampling", ["random", "sequential"])
def test_realised_proportions_follow_the_weights_at_every_point(tmp_path, sampling):
    weights = {"web": 0.7, "books": 0.2, "code": 0.1}
    data = MixtureDataset(sources(tmp_path, weights), "train", seq_len=16, batch_size=8, sampling=sampling, seed=1)
    counts = dict.fromkeys(weights, 0)
    for n in range(1, 101):
        for name in source_of_rows(data.next_batch()[0]):
            counts[name] += 1
        for name, weight in weights.items():  # never more than a couple of rows off, at any batch
            assert abs(counts[name] - weight * 8 * n) <= 2, (n, counts)
    assert counts == {"web": 560, "books": 160, "code": 80}
    stats = data.stats()["mixture"]
    assert {name: s["tokens"] for name, s in stats.items()} == {n: c * 16 for n, c in counts.items()}
    assert stats["web"]["share"] == pytest.approx(0.7)
    # web: 560 windows of 16 tokens over 2 shards x 4 docs x 400 tokens = 200 windows per epoch.
    assert stats["web"]["epochs"] == pytest.approx(560 / 198, rel=0.02)


def test_same_seed_same_batches_and_another_seed_other_batches(tmp_path):
    mix = sources(tmp_path, {"web": 3, "books": 1})  # weights are relative

    def run(seed):
        data = MixtureDataset(mix, "train", seq_len=16, batch_size=4, seed=seed)
        return [data.next_batch()[0] for _ in range(20)]

    first, again, other = run(5), run(5), run(6)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    # Only the windows change with the seed, never which source a row comes from.
    assert [source_of_rows(x) for x in first] == [source_of_rows(x) for x in other]


def test_ranks_split_each_global_batch_disjointly(tmp_path):
    mix = sources(tmp_path, {"web": 0.5, "books": 0.3, "code": 0.2})
    single = MixtureDataset(mix, "train", seq_len=16, batch_size=6, seed=2)
    ranks = [MixtureDataset(mix, "train", seq_len=16, batch_size=3, rank=r, world_size=2, seed=2) for r in range(2)]
    for _ in range(5):
        assert torch.equal(torch.cat([r.next_batch()[0] for r in ranks]), single.next_batch()[0])
    assert ranks[0].stats() == ranks[1].stats() == single.stats()  # every rank counts the global batch


def test_state_dict_resumes_the_exact_stream_mid_mixture(tmp_path):
    mix = sources(tmp_path, {"web": 0.6, "books": 0.3, "code": 0.1}, max_epochs={"code": 0.5})
    straight = MixtureDataset(mix, "train", seq_len=16, batch_size=8, seed=3)
    expected = [straight.next_batch() for _ in range(40)]
    first = MixtureDataset(mix, "train", seq_len=16, batch_size=8, seed=3)
    for _ in range(17):
        first.next_batch()
    first.batch(17), first.batch(18)  # prefetched ahead of the position, as on CUDA
    state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint stores
    resumed = MixtureDataset(mix, "train", seq_len=16, batch_size=8, seed=3)
    resumed.load_state_dict(state)
    for x, y in expected[17:]:
        got_x, got_y = resumed.next_batch()
        assert torch.equal(got_x, x) and torch.equal(got_y, y)
    assert resumed.stats() == straight.stats()


def test_a_checkpoint_of_another_mixture_is_refused(tmp_path):
    mix = sources(tmp_path, {"web": 0.7, "books": 0.3})
    data = MixtureDataset(mix, "train", seq_len=16, batch_size=4)
    data.next_batch()
    state = data.state_dict()
    changed = MixtureDataset([mix[0], Source("books", mix[1].directory, 0.5)], "train", seq_len=16, batch_size=4)
    with pytest.raises(TokenShardError, match=r"mixture \(name, weight, max_epochs\).*'books', 0.3"):
        changed.load_state_dict(state)
    with pytest.raises(TokenShardError, match="saved by a mixture"):
        ShardDataset(mix[0].directory, "train", seq_len=16, batch_size=4).load_state_dict(state)


def test_a_source_at_its_epoch_limit_is_dropped_and_the_rest_renormalised(tmp_path):
    mix = sources(tmp_path, {"web": 0.5, "books": 0.3, "code": 0.2}, max_epochs={"code": 1.0}, docs={"code": 1})
    data = MixtureDataset(mix, "train", seq_len=16, batch_size=8, sampling="sequential", on_exhausted="drop")
    limit = data.datasets[2].epoch_windows  # 2 shards x (399 // 16) = 48 windows: one epoch
    assert limit == 48
    rows = [name for _ in range(60) for name in source_of_rows(data.next_batch()[0])]
    assert rows.count("code") == limit
    last_code = max(i for i, name in enumerate(rows) if name == "code")
    after = rows[last_code + 1:]
    assert abs(after.count("web") / len(after) - 0.5 / 0.8) < 0.01  # web:books now 5:3
    stats = data.stats()["mixture"]
    assert stats["code"]["epochs"] == 1.0 and stats["code"]["weight"] == 0.0
    assert stats["code"]["exhausted_at_tokens"] == (last_code + 1) * 16
    assert stats["web"]["weight"] == pytest.approx(0.625)
    assert stats["web"]["exhausted_at_tokens"] is None
    assert data.data_end() is None


def test_stop_ends_the_data_before_the_first_batch_past_a_limit(tmp_path):
    mix = sources(tmp_path, {"web": 0.5, "books": 0.5}, max_epochs={"books": 0.5})
    data = MixtureDataset(mix, "train", seq_len=16, batch_size=4, on_exhausted="stop")
    limit = data.limits[1]
    assert limit == data.datasets[1].epoch_windows // 2
    batches = list(data)  # iterating stops at the end of the data
    assert sum(source_of_rows(x).count("books") for x, _ in batches) <= limit < (len(batches) + 1) * 2
    assert "source 'books' reached its epoch limit (0.5 epochs" in data.data_end()
    with pytest.raises(TokenShardError, match="runs out after"):
        data.next_batch()


def test_every_source_must_share_the_vocabulary_and_tokenizer(tmp_path):
    web = Source("web", write_band(tmp_path / "web", BANDS["web"]), 1.0)
    wider = Source("books", write_band(tmp_path / "books", BANDS["books"], vocab_size=128), 1.0)
    with pytest.raises(TokenShardError, match=r"mixture source 'books' .*vocab_size 128.*source 'web'"):
        describe_mixture([web, wider])
    other = Source("code", write_band(tmp_path / "code", BANDS["code"], tokenizer_sha256="ab" * 32), 1.0)
    with pytest.raises(TokenShardError, match=r"mixture source 'code' .*tokenizer abab.*same tokenizer"):
        describe_mixture([web, other])
    assert describe_mixture([web, Source("web2", web.directory, 2.0)])["vocab_size"] == VOCAB
    with pytest.raises(TokenShardError, match="mixture source 'nothing': no train-"):
        describe_mixture([web, Source("nothing", tmp_path / "missing", 1.0)])


def test_mixture_config_reads_from_yaml_and_errors_name_the_key(tmp_path):
    path = tmp_path / "mix.yaml"
    path.write_text("data:\n  seq_len: 32\n  on_exhausted: stop\n  mixture:\n"
                    "    web: {dir: a, weight: 0.7}\n    books: {dir: b, weight: 0.3, max_epochs: 2}\n")
    data = load_pretrain_config(path).data
    assert data.mixture == {"web": MixtureSource("a", 0.7), "books": MixtureSource("b", 0.3, 2.0)}
    assert data.on_exhausted == "stop"
    for body, message in [
        ("    books: {dir: b, weight: -1}\n", r"data.mixture.books: weight must be > 0"),
        ("    books: {dir: b, wieght: 1}\n", r"data.mixture.books: unknown key 'wieght'"),
        ("    books: {weight: 1}\n", r"data.mixture.books: dir is required"),
        ("    books: 0.3\n", r"data.mixture.books: expected a mapping"),
    ]:
        path.write_text("data:\n  mixture:\n" + body)
        with pytest.raises(TrainConfigError, match=message):
            load_pretrain_config(path)
    path.write_text("data:\n  dir: a\n  mixture: {web: {dir: a}}\n")
    with pytest.raises(TrainConfigError, match="set exactly one of dir"):
        load_pretrain_config(path)


def mixture_config(tmp_path, out: str, mix: list[Source], **train):
    config = tiny_run_config(tmp_path / out, tmp_path, **{"batch_tokens": 256, **train})
    config.data = DataConfig(mixture={s.name: MixtureSource(str(s.directory), s.weight, s.max_epochs) for s in mix},
                             seq_len=32)
    return config


def test_resumed_mixture_training_gives_the_same_batches_and_losses(tmp_path):
    mix = sources(tmp_path, {"web": 0.7, "books": 0.3})
    straight = Trainer(mixture_config(tmp_path, "straight", mix))
    straight.train()

    first = Trainer(mixture_config(tmp_path, "resumed", mix))
    first.train(stop_at=4)  # checkpoint at step 4, then the "crash"
    second = Trainer(mixture_config(tmp_path, "resumed", mix))
    assert second.step == 4 and second.train_data.batch_index == 4 * second.grad_accum_steps
    fresh = Trainer(mixture_config(tmp_path, "fresh", mix, resume=False))
    for i in range(4 * 2, 8 * 2):  # 2 micro-batches per step
        assert all(torch.equal(a, b) for a, b in zip(second.train_data.batch(i), fresh.train_data.batch(i)))
    second.train()

    def key(r):
        return r["step"], r["loss"], r["grad_norm"], r.get("val_loss")

    assert [key(r) for r in read_log(tmp_path / "resumed")] == [key(r) for r in read_log(tmp_path / "straight")]
    last = read_log(tmp_path / "straight")[-1]["mixture"]
    assert read_log(tmp_path / "resumed")[-1]["mixture"] == last
    assert last["web"]["tokens"] + last["books"]["tokens"] == 8 * 256
    assert last["web"]["share"] == pytest.approx(0.7, abs=0.01)
    for name, weight in straight.model.state_dict().items():
        assert torch.equal(weight, second.model.state_dict()[name]), name


def test_training_stops_when_the_data_ends_and_says_why(tmp_path, capsys):
    mix = sources(tmp_path, {"web": 0.5, "books": 0.5}, max_epochs={"web": 0.2, "books": 0.2})
    config = mixture_config(tmp_path, "run", mix, max_steps=50, checkpoint_every=0, eval_every=0)
    # 2 shards x (1600 - 1) // 32 = 98 windows per epoch: 19 windows each, 38 in all, 9 batches of
    # 4; a step takes 2 batches, so the 5th step would need a 10th.
    trainer = Trainer(config)
    trainer.train()
    log = read_log(tmp_path / "run")
    assert len(log) == trainer.step == 4
    assert "every source reached its epoch limit" in log[-1]["data_end"]
    # What was trained on, not what was planned: 16 windows of each source, none dropped yet.
    assert {n: (s["tokens"], s["exhausted_at_tokens"]) for n, s in log[-1]["mixture"].items()} == {
        "web": (16 * 32, None), "books": (16 * 32, None)}
    assert "stopping at step 4" in capsys.readouterr().out
    again = Trainer(config)  # resumed at the end of the data: nothing more to do
    assert again.train() == [] and again.step == 4


def test_no_host_reads_inside_a_mixture_train_step(tmp_path, monkeypatch):
    mix = sources(tmp_path, {"web": 0.7, "books": 0.3}, max_epochs={"books": 1.0})
    trainer = Trainer(mixture_config(tmp_path, "run", mix, log_every=4, eval_every=0, checkpoint_every=0))
    # As in test_trainer: fused AdamW, the CUDA configuration (plain AdamW on CPU reads its step count).
    groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in trainer.optimizer.param_groups]
    trainer.optimizer = torch.optim.AdamW(groups, fused=True)
    reads = HostReads(monkeypatch)
    with reads:
        for step in range(1, 4):
            trainer.train_step()
            assert reads.count == 0, f"step {step} read a tensor to the host"
