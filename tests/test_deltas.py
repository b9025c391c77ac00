from app.serving.deltas import DeltaTracker


def deltas(texts):
    tracker = DeltaTracker()
    return [tracker.delta(text) for text in texts]


def test_cumulative_text_becomes_deltas():
    assert deltas(["He", "Hello", "Hello there"]) == ["He", "llo", " there"]


def test_a_repeated_frame_gives_an_empty_delta():
    assert deltas(["Hi", "Hi"]) == ["Hi", ""]


def test_replacement_character_of_a_half_decoded_character_is_held_back():
    # A multi-byte character split across tokens first decodes as U+FFFD, then completes.
    assert deltas(["caf", "caf\ufffd", "café", "café!"]) == ["caf", "", "é", "!"]


def test_shrinking_text_emits_nothing():
    assert deltas(["Hello", "Hell", "Hello you"]) == ["Hello", "", " you"]


def test_deltas_join_to_the_final_text():
    texts = ["a" * i for i in range(1, 200)]
    assert "".join(deltas(texts)) == texts[-1]
