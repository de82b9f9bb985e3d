"""The block index: the real recording end to end (acceptance), chaining, removal, pods, LRU, scoring."""

from __future__ import annotations

import base64
import json

import msgpack
from support import FIXTURES

from serving.llmd.kvcache.events import AllBlocksCleared, BlockRemoved, BlockStored, decode_message, decode_payload
from serving.llmd.kvcache.index import KVIndex
from serving.llmd.kvcache.keys import block_keys
from serving.llmd.kvcache.tokenize import PromptTokenizer

RECORDING = FIXTURES / "vllm-kv-events"


def recorded_batches() -> list:
    out = []
    for line in (RECORDING / "events.jsonl").read_text().splitlines():
        m = json.loads(line)
        out.append(decode_message([m["topic"].encode(), m["seq"].to_bytes(8, "big"), base64.b64decode(m["payload_b64"])]).batch)
    return out


def recorded_requests() -> tuple[list[dict], list[list[int]]]:
    requests = json.loads((RECORDING / "requests.json").read_text())[:4]
    tok = PromptTokenizer(RECORDING / "tokenizer")
    ids = [tok.encode_chat(r["messages"]) if r["kind"] == "chat" else tok.encode_prompt(r["prompt"]) for r in requests]
    return requests, ids


def engine_chain(stored: list[BlockStored], token_ids: list[int]) -> list[int]:
    """Independent oracle: the engine hashes of the prompt's blocks, found by parent + content in the events."""
    by_parent: dict[tuple[int | None, tuple[int, ...]], int] = {}
    for event in stored:
        parent = event.parent_block_hash
        for i, h in enumerate(event.block_hashes):
            block = tuple(event.token_ids[i * 32 : (i + 1) * 32])
            by_parent[(parent, block)] = h
            parent = h
    chain, parent = [], None
    for i in range(len(token_ids) // 32):
        h = by_parent.get((parent, tuple(token_ids[i * 32 : (i + 1) * 32])))
        if h is None:
            break
        chain.append(h)
        parent = h
    return chain


def test_acceptance_recorded_requests_match_the_stored_blocks() -> None:
    requests, ids = recorded_requests()
    # our tokenization (completion and chat template) equals the engine's own /tokenize ids
    assert ids == [r["prompt_token_ids"] for r in requests]
    batches = recorded_batches()
    stored = [e for b in batches for e in b.events if isinstance(e, BlockStored)]
    chains = [engine_chain(stored, t) for t in ids]
    # the engine stored every full block of each prompt: 356, 355, 356 and 343 tokens
    assert [len(c) for c in chains] == [len(t) // 32 for t in ids] == [11, 11, 11, 10]

    index = KVIndex()
    alive: set[int] = set()
    seen_full = [False] * 4
    saw_eviction = [False] * 4
    for batch in batches:
        index.apply_batch("engine-0", batch)
        for event in batch.events:
            if isinstance(event, BlockStored):
                alive.update(event.block_hashes)
            elif isinstance(event, BlockRemoved):
                alive.difference_update(event.block_hashes)
        for i, (chain, tokens) in enumerate(zip(chains, ids, strict=True)):
            expected = next((n for n, h in enumerate(chain) if h not in alive), len(chain))
            got = index.score_tokens(tokens)["engine-0"]
            assert got == expected, f"request {i}: index says {got} blocks, the recorded events say {expected}"
            seen_full[i] |= got == len(tokens) // 32
            saw_eviction[i] |= seen_full[i] and got < len(tokens) // 32
    assert index.block_size == 32
    assert all(seen_full), "each recorded request was fully cached at some point"
    assert all(saw_eviction), "and the recorded BlockRemoved events later evicted it"
    assert index.stats.orphaned_blocks == 0 and index.stats.unknown_removed == 0
    assert index.pod_blocks("engine-0") == len(alive) == len(index)


def test_array_form_events_index_like_map_form() -> None:
    tokens = list(range(96))
    array_payload = msgpack.packb([0.0, [["BlockStored", [101, 102], None, tokens[:64], 32, None, "GPU"],
                                         ["BlockStored", [103], 102, tokens[64:], 32]]])
    index = KVIndex()
    index.apply_batch("p", decode_payload(array_payload))
    assert index.score_tokens(tokens) == {"p": 3}
    index.apply_batch("p", decode_payload(msgpack.packb([0.0, [["BlockRemoved", [102], "GPU"]]])))
    assert index.score_tokens(tokens) == {"p": 1}


def stored(hashes: list[int], tokens: list[int], parent: int | None = None, size: int = 4) -> BlockStored:
    return BlockStored(hashes, parent, tokens, size)


def test_unknown_parent_is_counted_and_skipped() -> None:
    index = KVIndex(block_size=4)
    index.apply("p", stored([2], [5, 6, 7, 8], parent=999))
    assert len(index) == 0 and index.stats.orphaned_blocks == 1
    assert index.score_tokens([1, 2, 3, 4, 5, 6, 7, 8]) == {"p": 0}


def test_block_size_mismatch_is_counted_and_skipped() -> None:
    index = KVIndex(block_size=4)
    index.apply("p", BlockStored([1], None, list(range(8)), 8))
    assert len(index) == 0 and index.stats.block_size_mismatch == 1


def test_scores_are_longest_consecutive_prefix_per_pod() -> None:
    tokens = list(range(16))
    index = KVIndex(block_size=4)
    index.apply("a", stored([1, 2, 3, 4], tokens))
    index.apply("b", stored([1, 2], tokens[:8]))
    index.apply("c", stored([9], [7, 7, 7, 7]))
    index.add_pod("d")
    assert index.score_tokens(tokens) == {"a": 4, "b": 2, "c": 0, "d": 0}
    assert index.score_tokens(tokens + [1, 2]) == {"a": 4, "b": 2, "c": 0, "d": 0}  # partial block ignored
    # a hole in the middle ends the prefix even if later blocks are held
    index.apply("a", BlockRemoved([2]))
    assert index.score_tokens(tokens)["a"] == 1
    assert index.score([]) == {"a": 0, "b": 0, "c": 0, "d": 0}


def test_lora_blocks_do_not_match_base_model_prompts() -> None:
    index = KVIndex(block_size=4)
    index.apply("p", BlockStored([1], None, [1, 2, 3, 4], 4, lora_id=7))
    assert index.score_tokens([1, 2, 3, 4]) == {"p": 0}
    assert index.score_tokens([1, 2, 3, 4], lora_id=7) == {"p": 1}


def test_removed_only_affects_its_pod() -> None:
    tokens = list(range(8))
    index = KVIndex(block_size=4)
    index.apply("a", stored([1, 2], tokens))
    index.apply("b", stored([50, 51], tokens))  # same content, engine hashes of another engine
    index.apply("a", BlockRemoved([1]))
    assert index.score_tokens(tokens) == {"a": 0, "b": 2}
    index.apply("b", BlockRemoved([777]))
    assert index.stats.unknown_removed == 1
    assert len(index) == 2


def test_all_blocks_cleared_and_drop_pod() -> None:
    tokens = list(range(8))
    index = KVIndex(block_size=4)
    index.apply("a", stored([1, 2], tokens))
    index.apply("b", stored([1, 2], tokens))
    index.apply("a", AllBlocksCleared())
    assert index.score_tokens(tokens) == {"a": 0, "b": 2}
    assert index.pods == ["a", "b"] and index.pod_blocks("a") == 0
    index.drop_pod("b")
    assert index.pods == ["a"] and len(index) == 0
    assert index.score_tokens(tokens) == {"a": 0}
    # a new pod may reuse the freed id without inheriting anything
    index.add_pod("c")
    assert index.score_tokens(tokens) == {"a": 0, "c": 0}
    index.drop_pod("nope")  # unknown pod: nothing to do


def test_lru_bounds_the_number_of_keys() -> None:
    index = KVIndex(block_size=4, capacity=3)
    old = list(range(100, 108))
    index.apply("p", stored([1, 2], old))
    assert index.score_tokens(old) == {"p": 2}
    for h in range(10, 14):  # four unrelated single blocks push the old ones out
        index.apply("p", stored([h], [h] * 4))
    assert len(index) == 3 and index.stats.evicted_keys == 3
    assert index.score_tokens(old) == {"p": 0}
    # the pod's engine map still knows the chain, so a child of an evicted block is still placed
    index.apply("p", stored([3], [9, 9, 9, 9], parent=2))
    assert block_keys(old + [9, 9, 9, 9], 4)[2] in index._keys


def test_scoring_hit_refreshes_lru() -> None:
    index = KVIndex(block_size=4, capacity=2)
    index.apply("p", stored([1], [1, 1, 1, 1]))
    index.apply("p", stored([2], [2, 2, 2, 2]))
    assert index.score_tokens([1, 1, 1, 1]) == {"p": 1}  # touch block 1
    index.apply("p", stored([3], [3, 3, 3, 3]))  # evicts block 2, the least recently used
    assert index.score_tokens([1, 1, 1, 1]) == {"p": 1}
    assert index.score_tokens([2, 2, 2, 2]) == {"p": 0}


def test_many_pods_bitmask() -> None:
    tokens = list(range(40))
    index = KVIndex(block_size=4)
    for p in range(130):  # more pods than a machine word
        held = p % 11
        if held:
            index.apply(f"pod-{p}", stored(list(range(1, held + 1)), tokens[: held * 4]))
        else:
            index.add_pod(f"pod-{p}")
    scores = index.score_tokens(tokens)
    assert scores == {f"pod-{p}": p % 11 for p in range(130)}


def test_block_size_learned_from_metrics_before_events_or_from_the_first_event() -> None:
    index = KVIndex()
    assert index.block_size is None and index.keys_for(list(range(64))) == []
    assert index.learn_block_size(32)  # e.g. vllm:cache_config_info{block_size="32"}
    assert index.block_size == 32 and len(index.keys_for(list(range(64)))) == 2
    assert index.learn_block_size(32)
    assert not index.learn_block_size(16) and index.stats.block_size_mismatch == 1
    assert index.block_size == 32
    # without metrics, the first BlockStored teaches it; events of another size are then ignored
    index = KVIndex()
    index.apply("p", BlockStored([1], None, list(range(4)), 4))
    assert index.block_size == 4
    index.apply("p", BlockStored([2], None, list(range(8)), 8))
    assert index.stats.block_size_mismatch == 1 and index.pod_blocks("p") == 1


def test_fast_ingest_matches_the_typed_path() -> None:
    """``ingest`` (raw tuples, inlined one-block stores) builds the same index as decode_payload + apply_batch."""
    payloads = []
    for line in (RECORDING / "events.jsonl").read_text().splitlines():
        payloads.append(base64.b64decode(json.loads(line)["payload_b64"]))
    # plus one-block events in positional-array form, chained from the recording's first stored block
    first = decode_payload(payloads[0]).events[0]
    tail = list(range(100, 132))
    payloads.append(msgpack.packb([1.0, [["BlockStored", [77], first.block_hashes[-1], tail, 32, None, "GPU"]], 0]))
    fast, typed = KVIndex(), KVIndex()
    for payload in payloads:
        fast.ingest("pod", payload)
        typed.apply_batch("pod", decode_payload(payload))
    assert fast.stats == typed.stats and fast.stats.stored_blocks > 0
    assert list(fast._keys.items()) == list(typed._keys.items())
    assert fast._engine == typed._engine
    _, ids = recorded_requests()
    for t in ids:
        assert fast.score_tokens(t) == typed.score_tokens(t)
