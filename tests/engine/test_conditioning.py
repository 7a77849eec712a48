"""WebUI prompt encoding: chunks of 75 tokens, BREAK, weights with the mean restored."""

from __future__ import annotations

import pytest
import torch

from engine.diffusion.conditioning import CHUNK_TOKENS, _weighted, encode_prompts, tokenize_chunks


@pytest.fixture(scope="module")
def pipe(engine):
    return engine.pipe


def test_short_prompt_is_one_chunk_like_the_pipeline_own_encoder(pipe):
    chunks = tokenize_chunks(pipe.tokenizer, "a cat in the snow")
    assert len(chunks) == 1 and len(chunks[0].tokens) == CHUNK_TOKENS + 2
    ours, _ = encode_prompts(pipe, ["a cat in the snow"])
    theirs, _ = pipe.encode_prompt("a cat in the snow", "cpu", 1, False)
    assert torch.equal(ours, theirs)


def test_long_prompt_is_chunked_not_truncated(pipe):
    prompt = ", ".join(["a cat"] * 40)
    chunks = tokenize_chunks(pipe.tokenizer, prompt)
    assert len(chunks) >= 2
    embeds, _ = encode_prompts(pipe, [prompt])
    assert embeds.shape[1] == 77 * len(chunks)


def test_break_starts_a_new_chunk(pipe):
    assert len(tokenize_chunks(pipe.tokenizer, "a cat BREAK snow")) == 2
    assert len(tokenize_chunks(pipe.tokenizer, "a cat break snow")) == 1  # only upper case


def test_words_near_a_chunk_end_move_to_the_next_chunk_at_the_last_comma(pipe):
    first = tokenize_chunks(pipe.tokenizer, "a " * 70 + ", snowy mountain top")[0]
    comma = pipe.tokenizer.get_vocab()[",</w>"]
    text_tokens = [t for t in first.tokens[1:] if t != pipe.tokenizer.eos_token_id]
    assert text_tokens[-1] == comma  # the chunk ends at the comma, the phrase went on


def test_weights_scale_tokens_and_keep_the_mean(pipe):
    plain, _ = encode_prompts(pipe, ["a cat, snow"])
    weighted, _ = encode_prompts(pipe, ["a cat, (snow:1.5)"])
    assert not torch.allclose(plain, weighted)
    # The mean is restored as WebUI does (scale by old mean / new mean). The tiny model's hidden
    # states average ~1e-8 (a bare layer norm), where that ratio is float noise, so the
    # restoration is checked on hidden states with a mean like real CLIP's.
    hidden = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(0)) - 0.1
    weights = [1.0] * 77
    weights[5] = 1.5
    restored = _weighted(hidden, weights)
    assert restored.mean().item() == pytest.approx(hidden.mean().item(), rel=1e-5)
    ratio = restored[0, 5] / restored[0, 4] / (hidden[0, 5] / hidden[0, 4])
    assert torch.allclose(ratio, torch.full_like(ratio, 1.5), rtol=1e-4)
    weights = tokenize_chunks(pipe.tokenizer, "a cat, (snow:1.5) [dog]")[0].weights
    assert 1.5 in weights and pytest.approx(1 / 1.1) in weights


def test_escaped_brackets_are_literal_text(pipe):
    weights = tokenize_chunks(pipe.tokenizer, r"\(cat\)")[0].weights
    assert set(weights) == {1.0}
    assert (
        tokenize_chunks(pipe.tokenizer, r"\(cat\)")[0].tokens
        != tokenize_chunks(pipe.tokenizer, "cat")[0].tokens
    )


def test_prompts_encoded_together_are_padded_to_the_same_length(pipe):
    embeds, pooled = encode_prompts(pipe, ["a cat", ", ".join(["snow"] * 60)])
    assert embeds.shape[0] == 2 and embeds.shape[1] % 77 == 0 and embeds.shape[1] > 77
    assert pooled is None  # SD 1.x has no pooled embedding


def test_clip_skip_two_uses_an_earlier_layer(pipe):
    last, _ = encode_prompts(pipe, ["a cat"], clip_skip=1)
    skipped, _ = encode_prompts(pipe, ["a cat"], clip_skip=2)
    assert not torch.allclose(last, skipped)
