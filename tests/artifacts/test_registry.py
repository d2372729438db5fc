"""Champion registry: compare-and-swap promotion and an append-only history that never loses an entry."""

from __future__ import annotations

import multiprocessing
import queue
import threading

import pytest

from rftflow.artifacts import store
from rftflow.artifacts.registry import Champion, ChampionRegistry, PromotionConflict, RegistryError

FAMILY = "tiny-llama"


def _champion(tag: str, cycle: int = 0) -> Champion:
    return Champion(
        model_uri=f"file:///models/{tag}",
        metrics={"pass_rate": 0.5},
        run_id=f"run-{tag}",
        cycle=cycle,
        promoted_at="2026-11-25T12:00:00+00:00",
        manifest_uri=f"file:///runs/{tag}/manifest.json",
    )


def test_empty_registry(artifact_root):
    registry = ChampionRegistry(artifact_root, FAMILY)
    assert registry.current() == (None, None)
    assert registry.history() == []


def test_promote_read_back_and_layout(artifact_root):
    registry = ChampionRegistry(artifact_root, FAMILY)
    first = _champion("a")
    token = registry.promote(first, expected_token=None)
    assert registry.current() == (first, token)
    base = store.join(artifact_root, "registry", FAMILY)
    assert store.exists(store.join(base, "champion.json"))
    assert store.exists(store.join(base, "history", "000001.json"))
    # Another instance (another task, another machine) sees the same state.
    assert ChampionRegistry(artifact_root, FAMILY).current() == (first, token)


def test_compare_and_swap(artifact_root):
    registry = ChampionRegistry(artifact_root, FAMILY)
    t1 = registry.promote(_champion("a"), expected_token=None)
    with pytest.raises(PromotionConflict, match="champion changed since it was read"):
        registry.promote(_champion("b"), expected_token=None)  # someone created it first
    t2 = registry.promote(_champion("b"), expected_token=t1)
    with pytest.raises(PromotionConflict):
        registry.promote(_champion("c"), expected_token=t1)  # stale token
    with pytest.raises(PromotionConflict):
        registry.promote(_champion("c"), expected_token="not-a-token")
    # Conflicts wrote nothing.
    assert registry.current() == (_champion("b"), t2)
    assert [entry["champion"]["model_uri"] for entry in registry.history()] == [
        "file:///models/a",
        "file:///models/b",
    ]


def test_same_champion_twice_gets_a_new_token(artifact_root):
    registry = ChampionRegistry(artifact_root, FAMILY)
    same = _champion("a")
    t1 = registry.promote(same, expected_token=None)
    t2 = registry.promote(same, expected_token=t1)
    assert t1 != t2
    with pytest.raises(PromotionConflict):  # an old token never becomes valid again (no ABA)
        registry.promote(same, expected_token=t1)


def test_history_is_an_ordered_chain(artifact_root):
    registry = ChampionRegistry(artifact_root, FAMILY)
    token = None
    tokens = []
    for i in range(3):
        token = registry.promote(_champion(f"m{i}", cycle=i), expected_token=token)
        tokens.append(token)
    history = registry.history()
    assert [h["seq"] for h in history] == [1, 2, 3]
    assert [h["token"] for h in history] == tokens
    assert [h["previous_token"] for h in history] == [None, *tokens[:-1]]
    assert [Champion.model_validate(h["champion"]) for h in history] == [
        _champion(f"m{i}", cycle=i) for i in range(3)
    ]
    assert all(h["model_family"] == FAMILY for h in history)


def test_families_are_independent(artifact_root):
    a, b = ChampionRegistry(artifact_root, "fam-a"), ChampionRegistry(artifact_root, "fam-b")
    a.promote(_champion("a"), expected_token=None)
    assert b.current() == (None, None)
    b.promote(_champion("b"), expected_token=None)
    assert a.current()[0] == _champion("a")


@pytest.mark.parametrize("family", ["", "../escape", "a/b", ".hidden", "-x", "x" * 129, "sp ace"])
def test_model_family_must_be_a_safe_name(family):
    with pytest.raises(ValueError, match="model_family: expected"):
        ChampionRegistry("/tmp/root", family)


def test_history_entry_lost_by_a_crashed_promoter_is_recovered(artifact_root):
    """A promoter that dies after the swap but before writing its history entry loses nothing."""
    registry = ChampionRegistry(artifact_root, FAMILY)
    t1 = registry.promote(_champion("a"), expected_token=None)
    t2 = registry.promote(_champion("b"), expected_token=t1)
    entry2 = store.join(registry.history_uri, "000002.json")
    path = store.local_path(entry2)
    if path is not None:
        import os

        os.remove(path)
    else:
        bucket, key = store.split_s3(entry2)
        store.s3_client().delete_object(Bucket=bucket, Key=key)
    assert not store.exists(entry2)
    assert [h["seq"] for h in registry.history()] == [1, 2]  # the pointer stands in for it
    registry.promote(_champion("c"), expected_token=t2)  # the next promoter writes it back
    assert store.exists(entry2)
    assert [h["champion"]["model_uri"][-1] for h in registry.history()] == ["a", "b", "c"]


def test_a_champion_from_a_newer_rftflow_is_refused(artifact_root):
    registry = ChampionRegistry(artifact_root, FAMILY)
    registry.promote(_champion("a"), expected_token=None)
    doc = store.read_json(registry.champion_uri) | {"schema_version": 99}
    store.write_json(registry.champion_uri, doc)
    with pytest.raises(RegistryError, match=r"champion\.json: schema_version 99 is newer"):
        registry.current()


def test_a_damaged_champion_file_names_the_field(artifact_root):
    registry = ChampionRegistry(artifact_root, FAMILY)
    registry.promote(_champion("a"), expected_token=None)
    doc = store.read_json(registry.champion_uri)
    del doc["champion"]["model_uri"]
    store.write_json(registry.champion_uri, doc)
    with pytest.raises(RegistryError, match=r"champion\.json: champion\.model_uri: Field required"):
        registry.current()


# --------------------------------------------------------------------------- concurrency

PROMOTERS = 8


def _promoter(root: str, worker: int, rounds: int, barrier, results) -> None:
    """Each round: everyone reads the same version, then everyone tries to promote over it."""
    registry = ChampionRegistry(root, FAMILY)
    try:
        for rnd in range(rounds):
            _, token = registry.current()
            barrier.wait()
            try:
                registry.promote(_champion(f"w{worker}-r{rnd}", cycle=rnd), expected_token=token)
                results.put((rnd, worker, "won"))
            except PromotionConflict:
                results.put((rnd, worker, "conflict"))
            barrier.wait()
    except Exception as exc:  # report instead of hanging the others at the barrier
        results.put((-1, worker, f"error: {exc!r}"))
        barrier.abort()


def _drain(results, expected: int) -> list[tuple[int, int, str]]:
    out = []
    for _ in range(expected):
        try:
            out.append(results.get(timeout=60))
        except queue.Empty:
            break
    return out


def _assert_one_winner_per_round_and_full_history(root: str, outcomes, rounds: int) -> None:
    errors = [o for o in outcomes if o[2].startswith("error")]
    assert errors == []
    assert len(outcomes) == PROMOTERS * rounds
    winners = {}
    for rnd in range(rounds):
        in_round = [o for o in outcomes if o[0] == rnd]
        won = [worker for _, worker, result in in_round if result == "won"]
        assert len(won) == 1, f"round {rnd}: winners {won}"
        assert sum(result == "conflict" for _, _, result in in_round) == PROMOTERS - 1
        winners[rnd] = won[0]
    registry = ChampionRegistry(root, FAMILY)
    history = registry.history()
    assert [h["seq"] for h in history] == list(range(1, rounds + 1))
    assert [h["champion"]["model_uri"] for h in history] == [
        f"file:///models/w{winners[rnd]}-r{rnd}" for rnd in range(rounds)
    ]
    assert [h["previous_token"] for h in history[1:]] == [h["token"] for h in history[:-1]]
    champion, token = registry.current()
    assert champion.model_uri == history[-1]["champion"]["model_uri"]
    assert token == history[-1]["token"]


def test_concurrent_promoters_threads(artifact_root):
    rounds = 4
    barrier = threading.Barrier(PROMOTERS, timeout=60)
    results: queue.Queue = queue.Queue()
    threads = [
        threading.Thread(target=_promoter, args=(artifact_root, w, rounds, barrier, results))
        for w in range(PROMOTERS)
    ]
    done = threading.Event()
    snapshots: list[list[int]] = []

    def read_history_meanwhile() -> None:  # readers never see a gap, whatever the timing
        registry = ChampionRegistry(artifact_root, FAMILY)
        while not done.is_set():
            snapshots.append([h["seq"] for h in registry.history()])

    reader = threading.Thread(target=read_history_meanwhile)
    reader.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    done.set()
    reader.join(timeout=60)
    _assert_one_winner_per_round_and_full_history(artifact_root, _drain(results, PROMOTERS * rounds), rounds)
    assert snapshots and all(seqs == list(range(1, len(seqs) + 1)) for seqs in snapshots)


def test_concurrent_promoters_processes(artifact_root):
    rounds = 3
    # fork, as Airflow's LocalExecutor does (and spawn costs ~1 s of imports per process); the parent's
    # other threads (the moto server, s3fs's event loop) hold no locks the children need.
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(PROMOTERS, timeout=60)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_promoter, args=(artifact_root, w, rounds, barrier, results))
        for w in range(PROMOTERS)
    ]
    for p in procs:
        p.start()
    outcomes = _drain(results, PROMOTERS * rounds)
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * PROMOTERS
    _assert_one_winner_per_round_and_full_history(artifact_root, outcomes, rounds)


def test_a_retried_swap_that_already_landed_counts_as_a_win(s3_root):
    """The SDK resends a PUT whose response was lost; the resend fails its own If-Match, yet we won."""
    registry = ChampionRegistry(s3_root, FAMILY)
    t1 = registry.promote(_champion("a"), expected_token=None)
    client = store.s3_client()
    resent = []

    def resend_champion_put_once(request_dict, **kwargs):
        if request_dict["url_path"].endswith("/champion.json") and not resent:
            resent.append(request_dict["url_path"])
            return 0  # retry at once, as after a dropped connection
        return None

    client.meta.events.register_first(
        "needs-retry.s3.PutObject", resend_champion_put_once, unique_id="test-resend"
    )
    try:
        t2 = registry.promote(_champion("b"), expected_token=t1)
    finally:
        client.meta.events.unregister("needs-retry.s3.PutObject", unique_id="test-resend")
    assert len(resent) == 1
    assert registry.current() == (_champion("b"), t2)
    assert [h["champion"]["model_uri"][-1] for h in registry.history()] == ["a", "b"]


def test_promoting_after_champion_json_was_deleted_by_hand_keeps_every_entry(artifact_root):
    """A repair (champion.json removed) followed by new promotions: history keeps old and new versions."""
    registry = ChampionRegistry(artifact_root, FAMILY)
    t1 = registry.promote(_champion("a"), expected_token=None)
    registry.promote(_champion("b"), expected_token=t1)
    path = store.local_path(registry.champion_uri)
    if path is not None:
        import os

        os.remove(path)
    else:
        bucket, key = store.split_s3(registry.champion_uri)
        store.s3_client().delete_object(Bucket=bucket, Key=key)
    t3 = registry.promote(_champion("c"), expected_token=None)
    registry.promote(_champion("d"), expected_token=t3)
    history = registry.history()
    assert [h["champion"]["model_uri"][-1] for h in history] == ["a", "b", "c", "d"]
    assert [h["seq"] for h in history] == [1, 2, 3, 4]
    assert registry.current()[0].model_uri == history[-1]["champion"]["model_uri"]


def test_a_version_restored_by_hand_over_a_recorded_seq_is_kept_beside_it(artifact_root):
    """champion.json replaced by hand with a document whose seq another entry holds: both stay listed."""
    registry = ChampionRegistry(artifact_root, FAMILY)
    t1 = registry.promote(_champion("a"), expected_token=None)
    registry.promote(_champion("b"), expected_token=t1)
    doc = store.read_json(registry.champion_uri)
    doc["seq"] = 1
    doc["champion"]["model_uri"] = "file:///models/restored"
    store.write_json(registry.champion_uri, doc)
    _, token = registry.current()
    registry.promote(_champion("c"), expected_token=token)
    uris = [h["champion"]["model_uri"].rsplit("/", 1)[-1] for h in registry.history()]
    assert sorted(uris) == ["a", "b", "c", "restored"]


def test_find_promotion_names_a_runs_own_version(artifact_root):
    registry = ChampionRegistry(artifact_root, FAMILY)
    t1 = registry.promote(_champion("a"), expected_token=None)
    registry.promote(_champion("b", cycle=2), expected_token=t1)
    found = registry.find_promotion(run_id="run-b", cycle=2, model_uri="file:///models/b", previous_token=t1)
    assert found is not None and found["seq"] == 2
    assert registry.find_promotion(run_id="run-b", cycle=2, model_uri="file:///models/b",
                                   previous_token=None) is None  # not over the version it read
    assert registry.find_promotion(run_id="run-x", cycle=2, model_uri="file:///models/b",
                                   previous_token=t1) is None
