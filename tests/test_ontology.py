from __future__ import annotations

import pytest

from ontologies import CaptionOntology, OntologyClass


def test_plain_dict_many_to_one() -> None:
    o = CaptionOntology({"a dog": "dog", "puppy": "dog", "person": "person"})
    assert o.classes() == ["dog", "person"]
    assert o.prompts() == ["a dog", "puppy", "person"]
    assert o.class_id("dog") == 0 and o.class_id("person") == 1
    assert o.caption_class_id("puppy") == 0
    assert o.caption_class("A  DOG ") == "dog"  # case / whitespace-insensitive lookup
    assert o["puppy"] == "dog"
    assert len(o) == 3 and o.num_classes == 2
    assert list(o) == ["a dog", "puppy", "person"]
    assert o.captions("dog") == ["a dog", "puppy"]
    assert o.threshold("dog") is None and o.negatives("dog") == []
    # autodistill names
    assert o.promptMap == [("a dog", "dog"), ("puppy", "dog"), ("person", "person")]
    assert o.classToPrompt("dog") == "a dog"


def test_class_order_is_first_seen() -> None:
    o = CaptionOntology({"cat": "cat", "a dog": "dog", "kitten": "cat"})
    assert o.classes() == ["cat", "dog"]
    assert o.caption_class_id("kitten") == 0


def test_thresholds_and_negatives() -> None:
    o = CaptionOntology(
        {"a dog": "dog", "person": "person"},
        thresholds={"dog": 0.3},
        negatives={"dog": ["toy dog", "dog statue"]},
    )
    assert o.threshold("dog") == pytest.approx(0.3)
    assert o.threshold("person") is None
    assert o.negatives("dog") == ["toy dog", "dog statue"]
    assert o.negative_prompts() == ["toy dog", "dog statue"]
    assert o.all_prompts() == ["a dog", "person", "toy dog", "dog statue"]
    assert o.is_negative("Toy Dog") and not o.is_negative("a dog")
    assert o.caption_class("toy dog") == "dog"
    assert "toy dog" not in o.prompts()


@pytest.mark.parametrize(
    "ontology",
    [
        CaptionOntology({"a dog": "dog", "puppy": "dog", "person": "person"}),
        CaptionOntology({"a dog": "dog"}, thresholds={"dog": 0.25}, negatives={"dog": ["toy dog"]}),
        CaptionOntology({"ünïcode thing": "thing", "x: y # z": "colon"}),
    ],
)
def test_yaml_and_dict_round_trip(ontology: CaptionOntology, tmp_path) -> None:
    assert CaptionOntology.from_dict(ontology.to_dict()) == ontology
    text = ontology.to_yaml()
    assert CaptionOntology.from_yaml(text) == ontology
    path = tmp_path / "ontology.yaml"
    ontology.to_yaml(path)
    assert CaptionOntology.from_yaml(path) == ontology
    assert CaptionOntology.from_yaml(str(path)) == ontology


def test_plain_form_stays_plain() -> None:
    o = CaptionOntology({"a dog": "dog", "puppy": "dog"})
    assert o.to_dict() == {"a dog": "dog", "puppy": "dog"}
    assert o == {"a dog": "dog", "puppy": "dog"}


def test_rich_yaml_forms() -> None:
    o = CaptionOntology.from_yaml(
        """
classes:
  dog:
    captions: [a dog, puppy]
    threshold: 0.3
    negative: toy dog
  person: {}
  car: a car
"""
    )
    assert o.classes() == ["dog", "person", "car"]
    assert o.prompts() == ["a dog", "puppy", "person", "a car"]
    assert o.negatives("dog") == ["toy dog"]
    listed = CaptionOntology.from_dict({"classes": [{"name": "dog", "captions": ["a dog"]}, {"name": "cat"}]})
    assert listed.classes() == ["dog", "cat"] and listed.prompts() == ["a dog", "cat"]


def test_equality_is_order_sensitive_and_hashable() -> None:
    a = CaptionOntology({"cat": "cat", "dog": "dog"})
    b = CaptionOntology({"dog": "dog", "cat": "cat"})
    assert a != b
    assert a == CaptionOntology({"cat": "cat", "dog": "dog"})
    assert hash(a) == hash(CaptionOntology({"cat": "cat", "dog": "dog"}))
    assert a != CaptionOntology({"cat": "cat", "dog": "dog"}, thresholds={"dog": 0.5})


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: CaptionOntology({}), "ontology is empty"),
        (lambda: CaptionOntology(None), "must be a mapping"),
        (lambda: CaptionOntology({"": "dog"}), "caption is empty"),
        (lambda: CaptionOntology({"   ": "dog"}), "caption is empty"),
        (lambda: CaptionOntology({"a dog": ""}), "class name for caption 'a dog' is empty"),
        (lambda: CaptionOntology({3: "dog"}), "caption must be a string, got int 3"),
        (lambda: CaptionOntology({"a dog": 7}), "class name for caption 'a dog' must be a string"),
        (lambda: CaptionOntology({"a dog": "dog", "A Dog": "cat"}), "'A Dog' of class 'cat' is already used by class 'dog'"),
        (lambda: CaptionOntology({"a dog": "dog"}, thresholds={"dog": 1.5}), "threshold of class 'dog' must be a number in [0, 1], got 1.5"),
        (lambda: CaptionOntology({"a dog": "dog"}, thresholds={"dog": -0.1}), "got -0.1"),
        (lambda: CaptionOntology({"a dog": "dog"}, thresholds={"dog": "high"}), "got 'high'"),
        (lambda: CaptionOntology({"a dog": "dog"}, thresholds={"cat": 0.3}), "threshold given for unknown class 'cat'"),
        (lambda: CaptionOntology({"a dog": "dog"}, negatives={"dog": ["a dog"]}), "negative caption 'a dog' of class 'dog' is already used"),
        (lambda: CaptionOntology({"a dog": "dog"}, negatives={"dog": [""]}), "negative caption of class 'dog' is empty"),
        (lambda: CaptionOntology.from_dict({"classes": {"dog": {"captions": ["x"], "color": 1}}}), "unknown keys ['color']"),
        (lambda: CaptionOntology.from_dict({"classes": {}}), "'classes' has no entries"),
        (lambda: CaptionOntology.from_dict({"classes": {"dog": ["a"], "cat": ["a"]}}), "caption 'a' of class 'cat' is already used by class 'dog'"),
        (lambda: CaptionOntology.from_dict({"classes": {"dog": {"captions": []}}}), "class 'dog' has no captions"),
        (lambda: CaptionOntology.from_dict({"classes": {"dog": ["a", "a"]}}), "caption 'a' is listed twice for class 'dog'"),
        (lambda: CaptionOntology.from_dict({"classes": {"dog": {}}, "extra": 1}), "unknown top-level ontology keys ['extra']"),
        (lambda: CaptionOntology.from_dict(["a dog"]), "ontology must be a mapping, got list"),
        (lambda: CaptionOntology.from_yaml("a: [unclosed\n"), "could not be parsed"),
        (lambda: CaptionOntology.from_yaml("# nothing\n"), "ontology is empty"),
        (lambda: CaptionOntology.from_classes([OntologyClass("dog", ("a",)), OntologyClass("dog", ("b",))]), "class 'dog' is listed twice"),
    ],
)
def test_invalid_input_names_the_entry(build, message: str) -> None:
    with pytest.raises(ValueError) as info:
        build()
    assert message in str(info.value)


def test_missing_yaml_file() -> None:
    with pytest.raises(FileNotFoundError, match="ontology file not found"):
        CaptionOntology.from_yaml("does/not/exist.yaml")


def test_unknown_lookups_raise_key_error() -> None:
    o = CaptionOntology({"a dog": "dog"})
    with pytest.raises(KeyError, match="unknown class 'cat'"):
        o.class_id("cat")
    with pytest.raises(KeyError, match="unknown caption 'a cat'"):
        o.caption_class("a cat")


def test_yaml_is_safe_loaded() -> None:
    with pytest.raises(ValueError):
        CaptionOntology.from_yaml("!!python/object/apply:os.system ['echo pwned']\n")
