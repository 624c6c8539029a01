"""The quickstart's language model: a 4-layer GPT-2 trained here, on CPU, from a corpus this module generates.

The corpus is short documents about one of four topics (animals, weather, cooking, space), each with its own
words, so that the trained model has something to represent: its activations separate the topics, an SAE trained
on them finds topic features, and a steering vector from one topic to another changes what it writes about.

    python -m interp_workloads.tiny_lm corpus examples/quickstart/corpus.jsonl
    python -m interp_workloads.tiny_lm train --corpus examples/quickstart/corpus.jsonl --out examples/quickstart/model

Both are deterministic for a given seed and torch version (the committed weights were produced by exactly these
commands; training takes about a minute on two CPU cores).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path

TOPICS: dict[str, dict[str, tuple[str, ...]]] = {
    "animals": {
        "subject": ("the dog", "the cat", "a horse", "the bird", "a fox", "the rabbit", "a cow", "the owl"),
        "verb": ("runs across", "sleeps in", "eats grass in", "hides in", "jumps over", "watches"),
        "place": ("the field", "the barn", "the forest", "the meadow", "the nest", "the farm"),
        "tail": ("with its tail up", "near the pond", "at dawn", "with the other animals"),
    },
    "weather": {
        "subject": ("the rain", "a cold wind", "the sun", "the storm", "heavy snow", "the fog", "a cloud"),
        "verb": ("falls on", "blows over", "shines on", "moves across", "covers", "hangs over"),
        "place": ("the city", "the hills", "the coast", "the valley", "the roofs", "the sky"),
        "tail": ("all afternoon", "before the thunder", "and the air turns cold", "until the evening"),
    },
    "cooking": {
        "subject": ("the cook", "a chef", "the baker", "my mother", "the kitchen staff"),
        "verb": ("stirs the soup in", "bakes bread in", "chops onions on", "fries eggs in", "mixes flour in"),
        "place": ("the pan", "the oven", "a large pot", "the bowl", "the kitchen"),
        "tail": ("with salt and butter", "for dinner", "until it is golden", "with fresh garlic"),
    },
    "space": {
        "subject": ("the rocket", "a satellite", "the astronaut", "the comet", "a probe", "the telescope"),
        "verb": ("orbits", "flies past", "lands on", "points at", "drifts toward", "circles"),
        "place": ("the moon", "the planet", "a distant star", "the station", "mars", "the galaxy"),
        "tail": ("in the dark", "far from earth", "at high speed", "beyond the clouds of dust"),
    },
}
SPECIAL_TOKENS = {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|pad|>", "unk_token": "<|unk|>"}
VOCAB_SIZE = 512
CONTEXT = 64


def sentence(topic: str, rng: random.Random) -> str:
    parts = TOPICS[topic]
    words = [rng.choice(parts["subject"]), rng.choice(parts["verb"]), rng.choice(parts["place"])]
    if rng.random() < 0.6:
        words.append(rng.choice(parts["tail"]))
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def write_corpus(path: str | Path, documents: int = 2000, seed: int = 0) -> Path:
    """``documents`` jsonl records ``{"text", "topic"}`` of 2 to 5 sentences on one topic each."""
    rng, out = random.Random(seed), Path(path)
    names = sorted(TOPICS)
    lines = []
    for index in range(documents):
        topic = names[index % len(names)]
        text = " ".join(sentence(topic, rng) for _ in range(rng.randint(2, 5)))
        lines.append(json.dumps({"text": text, "topic": topic}))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out


def read_texts(path: str | Path) -> list[str]:
    return [json.loads(line)["text"] for line in Path(path).read_text().splitlines() if line.strip()]


def train(corpus: str | Path, out: str | Path, *, steps: int = 800, batch_size: int = 32, n_layers: int = 4,
          d_model: int = 64, lr: float = 3e-3, seed: int = 0) -> dict[str, float]:
    """Train the tokenizer and the model on ``corpus``; save both (safetensors) to ``out``; returns the losses."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    texts = read_texts(corpus)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=VOCAB_SIZE, min_frequency=2,
                            special_tokens=list(SPECIAL_TOKENS.values()), show_progress=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, **SPECIAL_TOKENS)
    eos = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS["eos_token"])
    stream: list[int] = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        stream.extend([*ids, eos])
    data = torch.tensor(stream[: len(stream) // CONTEXT * CONTEXT]).view(-1, CONTEXT)
    held_out, data = data[:64], data[64:]

    special = {f"{name}_token_id": tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS[f"{name}_token"])
               for name in ("bos", "eos", "pad")}
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=CONTEXT, n_embd=d_model, n_layer=n_layers, n_head=4,
                        **special)
    model = GPT2LMHeadModel(config)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    started = time.monotonic()
    model.train()
    for step in range(steps):
        for group in optimiser.param_groups:  # linear warm-up, cosine decay
            group["lr"] = lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / steps))
        batch = data[torch.randint(len(data), (batch_size,), generator=generator)]
        loss = model(input_ids=batch, labels=batch).loss
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step:4d}  loss {loss.item():.3f}  {time.monotonic() - started:.0f}s", flush=True)
    model.eval()
    with torch.no_grad():
        evaluation = model(input_ids=held_out, labels=held_out).loss.item()
    destination = Path(out)
    model.save_pretrained(destination, safe_serialization=True)
    tokenizer.save_pretrained(destination)
    return {"train_loss": loss.item(), "held_out_loss": evaluation, "uniform_loss": math.log(len(tokenizer))}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interp_workloads.tiny_lm", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    corpus = commands.add_parser("corpus", help="write the topic corpus (jsonl)")
    corpus.add_argument("path")
    corpus.add_argument("--documents", type=int, default=2000)
    corpus.add_argument("--seed", type=int, default=0)
    trainer = commands.add_parser("train", help="train the tokenizer and the model on a corpus")
    trainer.add_argument("--corpus", required=True)
    trainer.add_argument("--out", required=True)
    trainer.add_argument("--steps", type=int, default=800)
    trainer.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "corpus":
        print(write_corpus(args.path, args.documents, args.seed))
        return 0
    import torch

    torch.set_num_threads(2)
    losses = train(args.corpus, args.out, steps=args.steps, seed=args.seed)
    print(json.dumps(losses))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
