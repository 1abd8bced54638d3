"""The rows that trained a given model: marker columns, row-number files, and the splits around them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config import DataParams
from pipeline.core.errors import PipelineError
from pipeline.datasets.loaders import load_dataset
from pipeline.datasets.members import rows_from_column, rows_from_index_file
from pipeline.datasets.splits import make_splits


def test_marker_columns_read_numbers_booleans_and_words() -> None:
    expected = [True, False, True, False]
    assert rows_from_column(np.array([1, 0, 1, 0]), "c").tolist() == expected
    assert rows_from_column(np.array([True, False, True, False]), "c").tolist() == expected
    assert rows_from_column(np.array(["yes", "No", " TRUE ", "0"]), "c").tolist() == expected
    with pytest.raises(PipelineError, match="row 2 holds 2"):
        rows_from_column(np.array([1, 0, 2]), "c")
    with pytest.raises(PipelineError, match="row 1 holds 'maybe'"):
        rows_from_column(np.array(["1", "maybe"]), "c")


def test_index_files_list_rows_once_each_in_range(tmp_path: Path) -> None:
    path = tmp_path / "rows.txt"
    path.write_text("3\n\n0\n5\n")
    assert np.flatnonzero(rows_from_index_file(path, "rows.txt", 6)).tolist() == [0, 3, 5]
    np.save(tmp_path / "rows.npy", np.array([1, 4]))
    assert np.flatnonzero(rows_from_index_file(tmp_path / "rows.npy", "rows.npy", 6)).tolist() == [1, 4]
    for text, message in [("1\n6\n", "line 2 names row 6, but the data has rows 0 to 5"), ("1\n1\n", "lists row 1 more than once"),
                          ("1\nx\n", "line 2 holds 'x'"), ("\n", "lists no rows")]:  # fmt: skip
        path.write_text(text)
        with pytest.raises(PipelineError, match=message):
            rows_from_index_file(path, "rows.txt", 6)


def _marked_npz(tmp_path: Path, n: int, trained: np.ndarray) -> DataParams:
    rng = np.random.default_rng(0)
    (tmp_path / "data/raw").mkdir(parents=True, exist_ok=True)
    np.savez(tmp_path / "data/raw/d.npz", x=rng.normal(size=(n, 3)), y=np.arange(n) % 2, member=trained)
    return DataParams(dataset="npz", path="data/raw/d.npz", member_column="member", n_test=10, n_shadow_pool=20,
                      n_defender_reference=5, min_per_class=2)  # fmt: skip


def test_the_members_are_exactly_the_marked_rows_and_the_rest_never_is(tmp_path: Path) -> None:
    trained = np.zeros(100, bool)
    trained[[3, 17, 42, 50, 51, 60, 77, 80, 91, 99]] = True
    params = _marked_npz(tmp_path, 100, trained)
    dataset = load_dataset(params, tmp_path)
    assert np.array_equal(dataset.trained, trained)
    splits = make_splits(100, params, np.random.default_rng(1), dataset.trained)
    assert sorted(splits.members) == np.flatnonzero(trained).tolist()
    assert len(splits.nonmembers) == 10
    others = np.concatenate([splits.nonmembers, splits.test, splits.shadow_pool, splits.defender_reference])
    assert not trained[others].any() and len(set(others)) == len(others) == 10 + 10 + 20 + 5


def test_splits_around_marked_rows_name_what_is_short(tmp_path: Path) -> None:
    trained = np.zeros(60, bool)
    trained[:15] = True
    params = _marked_npz(tmp_path, 60, trained)
    with pytest.raises(PipelineError, match=r"data.n_shadow_pool: the model trained on 15 marked rows, .* 30 pool rows"):
        make_splits(60, params, np.random.default_rng(0), trained)
    roomy = params.model_copy(update={"n_shadow_pool": 30})
    with pytest.raises(PipelineError, match="needs 60 rows it did not train on .* but the data has 45"):
        make_splits(60, roomy, np.random.default_rng(0), trained)


def test_a_marker_of_the_wrong_length_or_marking_everything_is_one_line(tmp_path: Path) -> None:
    params = _marked_npz(tmp_path, 50, np.ones(40, bool))
    with pytest.raises(PipelineError, match="has 40 marks but the data has 50 rows"):
        load_dataset(params, tmp_path)
    params = _marked_npz(tmp_path, 50, np.ones(50, bool))
    with pytest.raises(PipelineError, match="marks 50 of 50 rows as trained on"):
        load_dataset(params, tmp_path)
    with pytest.raises(PipelineError, match="digits has no columns"):
        load_dataset(DataParams(member_column="member"), tmp_path)
