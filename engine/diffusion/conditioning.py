"""Prompt → text-encoder conditioning, the way WebUI does it.

A prompt is parsed for attention weights (`prompts.syntax`), tokenized without truncation and cut
into chunks of 75 tokens (a `BREAK` or, near a chunk's end, the last comma starts a new chunk).
Each chunk is wrapped in BOS/EOS to CLIP's 77, encoded on its own, scaled by its token weights
with the mean restored, and the chunks are concatenated. So long prompts are not truncated, and
`(word:1.5)` means what WebUI users expect. Prompts encoded together are padded with empty
chunks to the same length, as WebUI pads the negative prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from prompts.syntax import parse_attention

CHUNK_TOKENS = 75  # CLIP's 77 minus BOS and EOS
COMMA_BACKTRACK = 20  # WebUI's default "comma padding backtrack"


@dataclass
class Chunk:
    tokens: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)


def tokenize_chunks(tokenizer, prompt: str) -> list[Chunk]:
    """Split `prompt` into 77-token chunks (BOS + 75 + EOS) with a weight per token."""
    fragments = parse_attention(prompt)
    texts = [text for text, weight in fragments if weight != -1]
    token_lists = iter(
        tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False).input_ids
    )
    comma = tokenizer.get_vocab().get(",</w>")
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id

    chunks: list[Chunk] = []
    chunk = Chunk()
    last_comma = -1

    def close_chunk() -> None:
        nonlocal chunk, last_comma
        padding = CHUNK_TOKENS - len(chunk.tokens)
        # EOS right after the text, then padding (for SD 1.x the pad token is EOS itself).
        chunk.tokens = [bos, *chunk.tokens, eos, *[pad] * padding]
        chunk.weights = [1.0, *chunk.weights, *[1.0] * padding, 1.0]
        chunks.append(chunk)
        chunk = Chunk()
        last_comma = -1

    for _text, weight in fragments:
        if weight == -1:  # BREAK
            close_chunk()
            continue
        for token in next(token_lists):
            if token == comma:
                last_comma = len(chunk.tokens)
            elif (
                len(chunk.tokens) == CHUNK_TOKENS
                and last_comma != -1
                and len(chunk.tokens) - last_comma <= COMMA_BACKTRACK
            ):
                # Move the words after the last comma to the next chunk instead of cutting a phrase.
                moved = Chunk(chunk.tokens[last_comma + 1 :], chunk.weights[last_comma + 1 :])
                del chunk.tokens[last_comma + 1 :], chunk.weights[last_comma + 1 :]
                close_chunk()
                chunk = moved
            if len(chunk.tokens) == CHUNK_TOKENS:
                close_chunk()
            chunk.tokens.append(token)
            chunk.weights.append(weight)
    if chunk.tokens or not chunks:
        close_chunk()
    return chunks


def _encode_chunk(text_encoder, tokens: torch.Tensor, hidden_layer: int, final_norm: bool):
    """Hidden states of one chunk from layer `-hidden_layer` (1 = last), and the pooled output."""
    output = text_encoder(tokens, output_hidden_states=True)
    if hidden_layer == 1:
        hidden = output.last_hidden_state
    else:
        hidden = output.hidden_states[-hidden_layer]
        if final_norm:
            # transformers 5 flattened CLIPTextModel; 4.x nests it under `text_model`.
            hidden = getattr(text_encoder, "text_model", text_encoder).final_layer_norm(hidden)
    return hidden, output[0] if hasattr(output, "text_embeds") else None


def _weighted(hidden: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """Scale token embeddings by their weights, then restore the chunk's mean (WebUI's emphasis)."""
    if all(w == 1.0 for w in weights):
        return hidden
    multipliers = torch.tensor(weights, dtype=hidden.dtype, device=hidden.device)
    original_mean = hidden.mean()
    hidden = hidden * multipliers.reshape(1, -1, 1)
    return hidden * (original_mean / hidden.mean())


def _encode_prompt(
    encoders: list[tuple], prompt: str, clip_skip: int, device
) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Per-chunk embeddings of `prompt` (encoders' features concatenated) and the pooled vector."""
    per_encoder_chunks = [tokenize_chunks(tokenizer, prompt) for tokenizer, *_ in encoders]
    chunk_embeddings: list[torch.Tensor] = []
    pooled = None
    for index in range(len(per_encoder_chunks[0])):
        features = []
        for (_, text_encoder, hidden_layer, final_norm), chunks in zip(
            encoders, per_encoder_chunks, strict=True
        ):
            chunk = chunks[index]
            tokens = torch.tensor([chunk.tokens], device=device)
            hidden, chunk_pooled = _encode_chunk(text_encoder, tokens, hidden_layer, final_norm)
            features.append(_weighted(hidden, chunk.weights))
            if index == 0 and chunk_pooled is not None:
                pooled = chunk_pooled  # SDXL pools the first chunk, as WebUI does
        chunk_embeddings.append(torch.cat(features, dim=-1))
    return chunk_embeddings, pooled


@torch.no_grad()
def encode_prompts(pipe, prompts: list[str], clip_skip: int = 1):
    """Embeddings for each prompt, padded to a common chunk count: (embeds [B, 77·n, D], pooled).

    `pooled` is None for SD 1.x. `clip_skip` is WebUI's "Clip skip" (1 = last layer; SD 1.x
    applies the final layer norm to earlier layers as WebUI does; SDXL starts from the
    penultimate layer, as its pipelines do).
    """
    device = pipe.text_encoder.device if pipe.text_encoder is not None else pipe.device
    if getattr(pipe, "text_encoder_2", None) is not None:
        encoders = [
            (pipe.tokenizer, pipe.text_encoder, clip_skip + 1, False),
            (pipe.tokenizer_2, pipe.text_encoder_2, clip_skip + 1, False),
        ]
    else:
        encoders = [(pipe.tokenizer, pipe.text_encoder, clip_skip, True)]

    encoded = [_encode_prompt(encoders, prompt, clip_skip, device) for prompt in prompts]
    longest = max(len(chunks) for chunks, _ in encoded)
    empty = None
    rows = []
    for chunks, _ in encoded:
        if len(chunks) < longest:
            if empty is None:
                empty = _encode_prompt(encoders, "", clip_skip, device)[0][0]
            chunks = chunks + [empty] * (longest - len(chunks))
        rows.append(torch.cat(chunks, dim=1))
    embeds = torch.cat(rows, dim=0)
    pooled = None
    if encoded[0][1] is not None:
        pooled = torch.cat([p for _, p in encoded], dim=0)
    return embeds, pooled
