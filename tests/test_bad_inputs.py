import pytest

from hypernetwork_ext import HypernetworkError

from bad_inputs import DOC, ROWS, render


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.group}: {r.what}" for r in ROWS])
def test_each_bad_input_gives_its_message(tmp_path, row):
    with pytest.raises(HypernetworkError) as caught:
        row.run(tmp_path)
    assert row.expect in str(caught.value)
    assert not (tmp_path / "marker").exists()


def test_the_catalogue_in_docs_is_current():
    assert DOC.read_text(encoding="utf-8") == render(), "run: python tests/bad_inputs.py"
