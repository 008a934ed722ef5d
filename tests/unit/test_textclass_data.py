"""Bundled text-classification tasks: seeded, balanced enough, and learnable from the words."""

from collections import Counter

import pytest

from trainforge.data.tasks import TICKET_TOPICS, generate_task


@pytest.mark.parametrize("name", ["support-tickets", "support-tickets-multi", "support-tickets-shift"])
def test_ticket_tasks_are_seeded_and_cover_every_topic(name):
    fmt, rows = generate_task(name, 400, seed=1)
    assert fmt == "classification"
    assert rows == generate_task(name, 400, seed=1)[1]
    assert rows != generate_task(name, 400, seed=2)[1]
    labels = Counter(label for r in rows for label in (r["labels"] if "labels" in r else [r["label"]]))
    assert set(labels) == set(TICKET_TOPICS)
    assert min(labels.values()) > 400 / len(TICKET_TOPICS) / 2  # no topic is rare


def test_multi_label_rows_carry_one_or_two_topics():
    _, rows = generate_task("support-tickets-multi", 500, seed=0)
    sizes = Counter(len(r["labels"]) for r in rows)
    assert set(sizes) == {1, 2} and 0.3 < sizes[2] / 500 < 0.5


def test_domain_shift_keeps_labels_but_changes_the_words():
    _, source = generate_task("support-tickets", 300, seed=0)
    _, shifted = generate_task("support-tickets-shift", 300, seed=0)
    words = lambda rows: {w.lower().strip(".,:?") for r in rows for w in r["text"].split()}  # noqa: E731
    overlap = len(words(source) & words(shifted)) / len(words(shifted))
    assert overlap < 0.5
    assert {r["label"] for r in source} == {r["label"] for r in shifted}


def test_a_bag_of_words_separates_the_topics():
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    _, rows = generate_task("support-tickets", 600, seed=0)
    vec = CountVectorizer().fit([r["text"] for r in rows[:400]])
    clf = LogisticRegression(max_iter=2000).fit(
        vec.transform([r["text"] for r in rows[:400]]), [r["label"] for r in rows[:400]]
    )
    assert clf.score(vec.transform([r["text"] for r in rows[400:]]), [r["label"] for r in rows[400:]]) > 0.9
