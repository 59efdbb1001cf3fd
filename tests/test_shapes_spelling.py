"""The spelling mender (hdiff.shapes.spelling): one-edit slips mended to the reader's training words, nothing else;
the words travel with the reader; a slip that misled the shipped reader no longer does."""

from __future__ import annotations

import pytest

from hdiff.errors import HdiffError
from hdiff.shapes.reader import Reader, load_reader, save_reader
from hdiff.shapes.spelling import NAMING_WORDS, mend, mended_word, one_edit
from hdiff.shapes.world import Request

KNOWN = frozenset({"background", "against", "with", "corner", "picture", "single", "draw", "where", "cat", "bag"})


@pytest.mark.parametrize("slip", ["bakground", "backgroound", "bcakground", "backgrund", "backgrvund"])
def test_one_edit_of_each_kind(slip):  # dropped, inserted, swapped, dropped, changed
    assert one_edit(slip, "background") and one_edit("background", slip)


def test_more_than_one_edit_is_not_one():
    assert not one_edit("background", "background")
    assert not one_edit("bakgruond", "background") and not one_edit("bckgrund", "background")
    assert not one_edit("abc", "cba")  # two letters apart swapped: two edits


def test_a_slip_is_mended_to_the_one_known_word_within_one_edit():
    assert mended_word("agianst", KNOWN) == "against"
    assert mended_word("wiht", KNOWN) == "with"
    assert mend("a red dot, blue bakground, top left cornr!", KNOWN) == "a red dot, blue background, top left corner!"


def test_case_is_kept():
    assert mended_word("BAKGROUND", KNOWN) == "BACKGROUND"
    assert mended_word("Agianst", KNOWN) == "Against"
    assert mend("DRWA A RED DOT", KNOWN) == "DRAW A RED DOT"


def test_ambiguous_unknown_and_whole_words_stay():
    assert mended_word("bat", KNOWN) == "bat"  # cat and bag: two neighbours
    assert mended_word("zebra", KNOWN) == "zebra"  # none
    assert mended_word("dra", KNOWN) == "draw" and mended_word("dr", KNOWN) == "dr"  # too short to mend
    assert mended_word("here", KNOWN) == "where"
    assert mended_word("here", KNOWN, whole=frozenset({"here"})) == "here"  # a word the tokenizer knows whole
    assert mend("bakground", frozenset()) == "bakground"  # a reader without words mends nothing


def test_words_that_name_a_value_are_never_mended_nor_made():
    known = KNOWN | {"red", "circle", "small", "pine", "hexagonal"}
    for word in ("pink", "purple", "hexagon", "orange", "circles", "two", "edge", "left"):
        assert word in NAMING_WORDS and mended_word(word, known) == word
    assert mended_word("bed", known) == "bed"  # one edit from red: a world colour is never made
    assert mended_word("circel", known) == "circel" and mended_word("smal", known) == "smal"
    assert mended_word("pinc", known) == "pinc"  # pink (not the world's) and pine
    assert mend("a purpel hexagn, pink bakground", known) == "a purpel hexagn, pink background"


def test_the_words_travel_with_the_reader(tmp_path):
    save_reader(tmp_path / "plain", Reader(16, 8))
    assert load_reader(tmp_path / "plain").words == frozenset()
    save_reader(tmp_path / "worded", Reader(16, 8, words=KNOWN))
    assert load_reader(tmp_path / "worded").words == KNOWN
    save_reader(tmp_path / "worded", Reader(16, 8))  # a reader without words mends nothing: no stale list stays
    assert load_reader(tmp_path / "worded").words == frozenset()
    (tmp_path / "worded" / "reader_words.txt").write_text("background\nBack-ground\n")
    with pytest.raises(HdiffError, match="Back-ground"):
        load_reader(tmp_path / "worded")


# --- the shipped reader --------------------------------------------------------------------------------------------


def test_the_shipped_readers_words_leave_out_of_world_words_as_written(shipped_reader):
    from hdiff.shapes.model import SENTENCE_MODEL
    from hdiff.shapes.spelling import tokenizer_words
    from hdiff.shapes_training.wording_eval import out_of_world

    assert {"background", "against", "corner"} <= shipped_reader.words
    whole = tokenizer_words(SENTENCE_MODEL)
    assert "what" in whole and "bakground" not in whole
    for prompt, unknown in out_of_world():
        if unknown != "two objects":
            assert unknown in mend(prompt, shipped_reader.words, whole).lower(), prompt


def test_a_slip_that_misled_the_shipped_reader_is_read_right(shipped_reader):
    from hdiff.shapes.model import SENTENCE_MODEL
    from hdiff.shapes.reader import read_prompts

    # "against" misspelt: without the mender the reader took the object's colour for the background's
    prompts = {"Agianst red, a square — yellow, small — in the top left corner.":
               Request(shape="square", color="yellow", size="small", position="top left", background="red"),
               "agaisnt white, a cross: black and big, bottom right corner":
               Request(shape="cross", color="black", size="large", position="bottom right", background="white")}
    assert read_prompts(shipped_reader, list(prompts), SENTENCE_MODEL) == list(prompts.values())


def test_the_grammars_prompts_and_the_demo_corpus_are_left_as_written(shipped_reader):
    """The grammar's held-out forms, the templates and the demo corpus hold no slip: their figures stand unmended."""
    import json
    from pathlib import Path

    from hdiff.shapes.model import SENTENCE_MODEL
    from hdiff.shapes.reader_sets import evaluation_sets
    from hdiff.shapes.spelling import tokenizer_words

    whole = tokenizer_words(SENTENCE_MODEL)
    sets = evaluation_sets(50)
    prompts = [prompt for name in ("phrasings", "partial", "templates", "two_object") for prompt, _ in sets[name]]
    demo = Path(__file__).resolve().parents[1] / "data" / "demo_prompts.jsonl"
    prompts += [json.loads(line)["prompt"] for line in demo.read_text().splitlines() if line.strip()]
    assert [p for p in prompts if mend(p, shipped_reader.words, whole) != p] == []
    free = [prompt for prompt, _ in sets["free"]]  # people's noise: some slips, mended
    assert 0 < sum(mend(p, shipped_reader.words, whole) != p for p in free) < len(free) / 2


def test_train_reader_writes_the_training_words_alone(tmp_path):
    """`train_reader --words-only` writes the words of the training writers, noise off, and trains nothing."""
    import json

    from hdiff.shapes.reader import load_words
    from hdiff.shapes_training.train_reader import ReaderConfig, main, training_words

    (tmp_path / "unet").mkdir()
    small = {"phrasings_per_scene": 1, "partial_per_scene": 1, "free_per_scene": 1, "free_partial_per_scene": 0}
    (tmp_path / "config.json").write_text(json.dumps(small))
    assert main(["--model", str(tmp_path), "--config", str(tmp_path / "config.json"), "--words-only"]) == 0
    words = load_words(tmp_path)
    assert {"background", "backdrop", "canvas", "circle", "corner"} <= words
    assert not (tmp_path / "reader.safetensors").exists()
    assert words == training_words(ReaderConfig(**small))
    assert training_words(ReaderConfig(**small, noise_share=1.0)) == words  # the noise's slips are never listed
